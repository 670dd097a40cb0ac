"""`make gpu-check`: run every GPU variant of a small bundle on this machine, with parity, timings and threads.

    python tools/gpu_check.py [--batches 1,8,64,256] [--repeats 30] [--variants NAME,...] [--report DIR]
                              [--json OUT] [--budget-min M] [--require-gpu] [--dry-run]

Exports a small random-init RGB DCGAN (64x64, max batch 256; fp32 and fp16 graphs, torch fp16/bf16 weights,
TensorRT engines when TensorRT is installed), then, for every variant the table of backends says can run on
CUDA here (TensorRT engines; onnxruntime CUDA and its TensorRT provider; torch CUDA fp32/fp16/bf16, each
eager, channels_last, CUDA graphs, both, and torch.compile max-autotune; in that order):

- a cold threaded case (static-shape variants other than torch.compile): loaded with 2 slots and no
  warm-up, 8 threads over batches 1-5, so graphs are captured while other threads run; every result
  bit-equal to the same call made alone;
- ``warmup()`` of the timed batches, then of every bucket, and GPU memory after it;
- parity against the torch fp32 CPU reference on 16 seeds (max |diff| in uint8 levels, PSNR), gated by the
  precision table's GPU limit (``ganrt.precisions``);
- host-to-host ``generate`` latency (median of ``--repeats`` calls after warm-up) and images/s per batch;
- the warm threaded case (the same 8 threads, after warm-up).

Verdicts: a variant fails (exit status 1) when it raised anything but "not available here" (a BackendError
or BundleError from TensorRT, onnxruntime or torch is a failure, not a skip), missed its parity limit,
answered a threaded call wrongly, or when TensorRT is installed and an engine could not be built (a failed
export is a failed row, never a quiet fp32-only rerun) or is missing for an exported precision. What was
skipped is listed with why (not available here; out of ``--budget-min``: a variant starts only with
:data:`VARIANT_MINUTES`, a torch.compile one with :data:`COMPILE_MINUTES`, left). One table, plus ``--report DIR``
(``report.md`` and ``results.json``, rewritten after every variant, so a killed run leaves what it did).

Without a GPU it says what is missing and exits 0 (2 with ``--require-gpu``). ``--dry-run`` rehearses the
run on the CPU: the same export, the list of variants a GPU would run, and the same checks on the plain
fp32/fp16 CPU variants (2 timed calls, 16 threaded calls), the report included;
``tools/gpu_oneshot.sh --dry-run`` rehearses the one-line GPU command with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runtime_concurrency import threaded  # a sibling script: tools/ is on the path when one runs

THREADS = 8
TOOLS = Path(__file__).resolve().parent
# minutes a variant is given before --budget-min ends: torch.compile max-autotune compiles 6 batch shapes
VARIANT_MINUTES, COMPILE_MINUTES = 0.5, 3.0
ORDER = ("tensorrt", "onnxruntime", "torch")  # the backend rows, checked in this order; compile variants last


def missing_gpu_message() -> str | None:
    """None when a CUDA GPU is usable here, else a line saying what is missing."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"no CUDA GPU is visible ({build}, torch {torch.__version__})"
    return None


def small_bundle(work: Path, *, engines: bool, max_batch: int, log) -> tuple[Path, list[dict]]:
    """(the bundle, failed rows): a failed export is a failed row; without engines the rest is still checked."""
    import torch

    from ganrt.checkpoint import Checkpoint, save_checkpoint
    from ganrt.export import ExportOptions, export_checkpoint
    from ganrt.models import build_generator
    from ganrt.spec import GeneratorSpec

    spec = GeneratorSpec(arch="dcgan", latent_dim=64, channels=3, height=64, width=64, num_classes=10,
                         arch_kwargs={"width": 32, "embed_dim": 16})
    torch.manual_seed(0)
    g = build_generator(spec).train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        g(torch.randn(64, spec.latent_dim), torch.randint(0, 10, (64,)))
    ckpt = work / "small.safetensors"
    save_checkpoint(ckpt, Checkpoint(spec=spec, tensors={f"G.{k}": v for k, v in g.state_dict().items()}))
    bundle = work / "bundle"
    options = ExportOptions(precisions=("fp32", "fp16"), tensorrt=engines, max_batch=max_batch,
                            torch_precisions=("fp16", "bf16"))
    try:
        export_checkpoint(ckpt, bundle, options=options, progress=log)
        return bundle, []
    except Exception as e:  # noqa: BLE001 - recorded as a failure, then the rest is checked without engines
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log(f"export failed ({error}); checking the rest without TensorRT engines")
        rows = [{"variant": f"export ({'fp32, fp16, engines' if engines else 'fp32, fp16'})", "error": error,
                 "passed": False}]
        try:
            export_checkpoint(ckpt, bundle, options=ExportOptions(precisions=("fp32", "fp16"), max_batch=max_batch,
                                                                  torch_precisions=("fp16", "bf16")), progress=log)
        except Exception as e2:  # noqa: BLE001
            rows.append({"variant": "export (fp32, fp16)", "error": f"{type(e2).__name__}: {e2}", "passed": False})
            raise SystemExit(_finish(rows, None, [], None)) from e2
        return bundle, rows


def engine_rows(manifest: dict, avail) -> list[dict]:
    """With TensorRT here: a failed row for every exported precision whose engine is missing or cannot run."""
    if avail.tensorrt is None:
        return []
    from ganrt.runtime.selection import runnable

    pool = runnable(manifest, avail)
    have = {c.precision for c in pool.choices if c.backend == "tensorrt"}
    why = {m.precision: m.text for m in pool.missing if m.backend == "tensorrt"}
    exported = sorted({a["precision"] for a in manifest["artifacts"].values()
                       if a.get("kind") == "onnx" and not a.get("rewritten") and a.get("precision") != "bf16"})
    return [{"variant": f"tensorrt-{p}", "error": f"no runnable engine: {why.get(p, 'none was built')}",
             "passed": False} for p in exported if p not in have]


def threaded_case(gen, threads: int = THREADS, calls: int = 64) -> dict:
    """``calls`` requests (batch 1..5, distinct seeds) made by ``threads`` threads vs the same calls alone."""
    import numpy as np

    requests, seed = [], 0
    for i in range(calls):
        b = 1 + i % 5
        requests.append(list(range(seed, seed + b)))
        seed += b

    def call(i):
        return gen.generate(seeds=requests[i], labels=[s % 10 for s in requests[i]])

    results, errors, _ = threaded(call, calls, threads)  # first: a cold generator captures under threads
    alone = [call(i) for i in range(calls)]
    wrong = sum(1 for r, a in zip(results, alone, strict=True) if r is None or not np.array_equal(r, a))
    return {"calls": calls, "threads": threads, "wrong": wrong, "errors": errors[:3]}


def time_batch(gen, batch: int, repeats: int) -> dict:
    seeds = list(range(batch))
    labels = [s % 10 for s in seeds]
    for _ in range(3):
        gen.generate(seeds=seeds, labels=labels)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        gen.generate(seeds=seeds, labels=labels)
        times.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times)
    return {"median_ms": med, "min_ms": min(times), "images_per_s": batch * 1e3 / med}


def _memory_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.memory_allocated() / 2**20, 1)


def check_variant(bundle: Path, name: str, reference, batches: list[int], repeats: int, *,
                  calls: int = 64) -> dict:
    """One variant's row. Only BackendUnavailable ("cannot run here") is a skip; any other error fails."""
    from ganrt.errors import BackendUnavailable
    from ganrt.parity import image_parity, json_safe
    from ganrt.precisions import PRECISIONS
    from ganrt.runtime import load

    row: dict = {"variant": name}
    try:
        if "compile" not in name:  # captures made lazily, by 8 threads at once, on 2 slots
            with load(bundle, variant=name, concurrency=2) as cold:
                if cold.batch_buckets is not None:
                    row["cold_threaded"] = threaded_case(cold, calls=calls)
        with load(bundle, variant=name) as gen:
            gen.warmup(batches)
            if gen.cuda_graphs:
                gen.warmup()  # every bucket: nothing is captured while serving
            row["memory_mb"] = _memory_mb() if gen.device == "cuda" else None
            seeds = list(range(len(reference)))
            images = gen.generate(seeds=seeds, labels=[s % 10 for s in seeds])
            parity = image_parity(reference, images, nonfinite=0)
            limit = PRECISIONS[gen.precision].gpu_max_abs_diff if gen.device == "cuda" else \
                PRECISIONS[gen.precision].max_abs_diff
            row.update(reason=gen.reason, parity=json_safe(parity), limit=limit,
                       passed=limit is None or parity["max_abs_diff"] <= limit,
                       timings={b: time_batch(gen, b, repeats) for b in batches},
                       threaded=threaded_case(gen, calls=calls))
        for case in ("cold_threaded", "threaded"):
            if case in row and (row[case]["wrong"] or row[case]["errors"]):
                row["passed"] = False
    except BackendUnavailable as e:  # not available here (no engine for this GPU, library missing...)
        row["skipped"] = str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a backend, bundle or library failure of a variant that should run
        row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", passed=False)
    return row


def ordered(names: list[str]) -> list[str]:
    """TensorRT, then onnxruntime, then torch; torch.compile last (the slowest to prepare)."""
    return sorted(names, key=lambda n: ("compile" in n, next((i for i, b in enumerate(ORDER)
                                                               if n.startswith(b + "-")), len(ORDER))))


def table(rows: list[dict], batches: list[int]) -> str:
    head = f"{'variant':32s} {'parity':>16s}  " + "  ".join(f"{'B=' + str(b):>19s}" for b in batches) + \
        "  threads (cold, warm)"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['variant']:32s} skipped: {r['skipped']}")
            continue
        if "error" in r or "parity" not in r:
            lines.append(f"{r['variant']:32s} " + (f"ERROR {r['error']}" if "error" in r else
                                                   ("ok" if r.get("passed") else "FAIL")))
            continue
        p = r["parity"]
        limit = "-" if r["limit"] is None else f"{r['limit']:g}"
        psnr = p["psnr_db"] if isinstance(p["psnr_db"], str) else f"{p['psnr_db']:.1f}"
        par = f"{'ok' if r['passed'] else 'FAIL'} {p['max_abs_diff']:.0f}/{limit} {psnr}dB"
        cells = "  ".join(f"{t['median_ms']:8.3f}ms {t['images_per_s']:7.0f}/s".rjust(19)
                          for t in (r["timings"][b] for b in batches))
        cold = r.get("cold_threaded")
        threads = (f"{cold['wrong']}/{cold['calls']}" if cold else "-") + \
            f", {r['threaded']['wrong']}/{r['threaded']['calls']} wrong"
        lines.append(f"{r['variant']:32s} {par:>16s}  {cells}  {threads}")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    failed = [r["variant"] for r in rows if r.get("passed") is False]
    skipped = [r for r in rows if "skipped" in r]
    passed = sum(1 for r in rows if r.get("passed") is True)
    lines = [f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped"]
    lines += [f"  FAILED {name}" for name in failed]
    lines += [f"  skipped {r['variant']}: {r['skipped']}" for r in skipped]
    return "\n".join(lines)


def write_json(path: Path, header: dict, rows: list[dict], batches: list[int]) -> None:
    path.write_text(json.dumps({**header, "batches": batches, "results": rows}, indent=2, default=str))


def write_report(folder: Path, header: dict, rows: list[dict], batches: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", header, rows, batches)
    md = [f"# gpu-check: {header.get('gpu') or 'no GPU'} ({header.get('sm')})", "",
          f"TensorRT {header.get('tensorrt') or 'not installed'}; onnxruntime providers: "
          f"{', '.join(header.get('ort_providers') or []) or 'none'}; torch {header.get('torch')}"
          + ("; DRY RUN on the CPU" if header.get("dry_run") else ""), "",
          "```", table(rows, batches), "```", "", "```", summary(rows), "```"]
    if header.get("planned"):
        md += ["", "Variants a GPU would run (dry run): " + ", ".join(header["planned"])]
    if header.get("image"):
        image = header["image"]
        md += ["", f"Distributions the run imported that ganrt needs: {', '.join(image['imported'])}; carried as "
               f"wheels: {', '.join(image['carried'])}; lacking on the GPU image: "
               f"{', '.join(image['lacking']) or 'none'}"]
    if header.get("timing_cache"):
        md += ["", f"Timing cache attached with strict verification (True: used; False/None: refused): "
               f"{header['timing_cache']}"]
    if header.get("engines"):
        md += ["", "TensorRT engines (inspector layout, first layers):", "```",
               json.dumps(header["engines"], indent=1)[:4000], "```"]
    (folder / "report.md").write_text("\n".join(md) + "\n")


def engines_inspected(bundle_dir: Path) -> dict:
    """Each engine's inspector layout, confirmed precision and first two layers (TensorRT 10 vs 11 JSON)."""
    from ganrt.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    out = {}
    for name, entry in bundle.find(kind="engine").items():
        info = {"layer_precisions": entry.get("layer_precisions"), "made_by": entry.get("made_by")}
        try:
            import tensorrt as trt

            engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
                bundle.artifact_path(name).read_bytes())
            layers = json.loads(engine.create_engine_inspector().get_engine_information(
                trt.LayerInformationFormat.JSON)).get("Layers", [])
            info.update(first_layers=layers[:2], device_memory_size_v2=int(engine.device_memory_size_v2))
        except Exception as e:  # noqa: BLE001 - the report says why; the variant rows carry the verdict
            info["inspector_error"] = f"{type(e).__name__}: {e}"
        out[name] = info
    return out


def timing_cache_probe(bundle_dir: Path) -> dict:
    """What TensorRT answers when the bundle's timing cache, a truncated copy and an empty one are attached
    with strict verification (``set_timing_cache(ignore_mismatch=False)``): ganrt's builder attaches a fresh
    cache whenever the answer is None or False."""
    try:
        import tensorrt as trt

        blob = (bundle_dir / "timing.cache").read_bytes()
        config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
        out = {}
        for label, data in (("own", blob), ("truncated", blob[: len(blob) // 2]), ("empty", b"")):
            cache = config.create_timing_cache(data)
            out[label] = None if cache is None else bool(config.set_timing_cache(cache, ignore_mismatch=False))
        return out
    except Exception as e:  # noqa: BLE001 - a probe for the report, not a verdict
        return {"error": f"{type(e).__name__}: {e}"}


def _names(path: Path) -> set[str]:
    """The package names of a list file (# comments; 'name==version' or bare names, any whitespace)."""
    from packaging.utils import canonicalize_name

    words = (w for line in path.read_text().splitlines() for w in line.split("#")[0].split())
    return {canonicalize_name(w.split("==")[0]) for w in words}


def requirement_closure(root: str = "ganrt") -> set[str]:
    """Every distribution ``root`` needs, transitively (its declared requirements, no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def image_coverage(tools: Path = TOOLS, modules=None) -> dict:
    """The distributions this run imported (``modules``: default, every module imported so far) that ganrt
    needs, and those of them the GPU image lacks beyond ``gpu_wheels.txt`` (``gpu_image_packages.txt`` lists
    the image's): the dry run fails on any, as the one-line command would fail there."""
    import importlib.metadata as md

    from packaging.utils import canonicalize_name

    owners = md.packages_distributions()
    imported = {canonicalize_name(d) for m in (list(sys.modules) if modules is None else modules)
                for d in owners.get(m.split(".")[0], [])}
    needed = sorted((imported & requirement_closure()) - {"ganrt"})
    have = _names(tools / "gpu_image_packages.txt") | _names(tools / "gpu_wheels.txt")
    return {"imported": needed, "carried": sorted(_names(tools / "gpu_wheels.txt")),
            "lacking": [d for d in needed if d not in have]}


def _finish(rows: list[dict], report: Path | None, batches: list[int], header: dict | None) -> int:
    print(table(rows, batches))
    print(summary(rows))
    if report is not None and header is not None:
        write_report(report, header, rows, batches)
        print(f"report: {report / 'report.md'}")
    return 1 if any(r.get("passed") is False for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,8,64,256", help="batch sizes timed (default 1,8,64,256)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant and batch (default 30)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: every CUDA one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--report", type=Path, default=None, help="write report.md and results.json in this folder")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="start no variant after this many minutes (the rest are listed as skipped)")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2, not 0, when no GPU is usable")
    parser.add_argument("--dry-run", action="store_true", help="rehearse on the CPU: the export, the plan, and the "
                                                               "checks on CPU variants")
    args = parser.parse_args(argv)
    start = time.monotonic()
    batches = sorted({int(b) for b in args.batches.split(",")})

    missing = missing_gpu_message()
    if missing is not None and not args.dry_run:
        print(f"gpu-check: skipped: {missing}. Nothing GPU-side can run here (torch CUDA, onnxruntime CUDA/"
              "TensorRT providers, TensorRT engines); run `make gpu-check` on a machine with an NVIDIA GPU, "
              "CUDA torch and `pip install ganrt[gpu]`.")
        return 2 if args.require_gpu else 0

    import dataclasses

    import torch

    from ganrt.bundle import Bundle
    from ganrt.runtime import load
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import here, runnable

    avail = Availability.probe()
    dry = missing is not None
    device = "cpu" if dry else "cuda"
    repeats = min(args.repeats, 2) if dry else args.repeats
    print(f"gpu-check{' (DRY RUN on the CPU: ' + missing + ')' if dry else ''} on {avail.gpu or avail.cpu} "
          f"({avail.sm}); TensorRT {avail.tensorrt or 'not installed'}; onnxruntime providers: "
          f"{', '.join(avail.ort_providers) or 'none'}", flush=True)
    import ganrt

    header = {"gpu": avail.gpu, "sm": avail.sm, "tensorrt": avail.tensorrt, "ort_providers": list(avail.ort_providers),
              "torch": torch.__version__, "dry_run": dry, "ganrt_from": str(Path(ganrt.__file__).parent)}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ganrt-gpu-check-") as tmp:
        bundle, rows = small_bundle(Path(tmp), engines=avail.tensorrt is not None and not dry,
                                    max_batch=max(batches), log=lambda m: print(f"  {m}", file=sys.stderr))
        manifest = Bundle.open(bundle).to_dict()
        if not dry:
            rows += engine_rows(manifest, avail)
            if avail.tensorrt:
                header["engines"], header["timing_cache"] = engines_inspected(bundle), timing_cache_probe(bundle)
        for name, why in here(manifest, avail)["unavailable"].items():
            print(f"  {name}: {why}")
        if dry:  # what a GPU would run, from the same table; the CPU variants are checked instead
            gpu = dataclasses.replace(avail, gpu="a CUDA GPU", sm="sm90")
            header["planned"] = [c.variant for c in runnable(manifest, gpu).choices if c.device == "cuda"]
            print(f"  a GPU would check: {', '.join(header['planned'])}")
        names = args.variants.split(",") if args.variants else ordered([  # dry run: the plain fp32/fp16 ones
            c.variant for c in runnable(manifest, avail).choices
            if c.device == device and not (dry and (c.options or c.precision not in ("fp32", "fp16")))])
        with load(bundle, backend="torch", device="cpu") as ref_gen:
            reference = ref_gen.generate(seeds=range(16), labels=[s % 10 for s in range(16)])
        for name in names:
            minutes = (time.monotonic() - start) / 60
            need = COMPILE_MINUTES if "compile" in name else VARIANT_MINUTES
            if args.budget_min is not None and minutes + need > args.budget_min:
                rows.append({"variant": name, "skipped": f"out of time: {minutes:.1f} of --budget-min "
                                                         f"{args.budget_min:g} minutes used, {need:g} needed"})
                continue
            print(f"  checking {name} ...", file=sys.stderr, flush=True)
            rows.append(check_variant(bundle, name, reference, batches, repeats, calls=16 if dry else 64))
            if args.report:
                write_report(args.report, header, rows, batches)
    if dry:
        header["image"] = image_coverage()
        if header["image"]["lacking"]:
            rows.append({"variant": "GPU image packages", "passed": False,
                         "error": f"the run imports {', '.join(header['image']['lacking'])}, which the GPU image "
                                  "lacks: add them to tools/gpu_wheels.txt"})
    if args.json:
        write_json(args.json, header, rows, batches)
    return _finish(rows, args.report, batches, header)


if __name__ == "__main__":
    sys.exit(main())
