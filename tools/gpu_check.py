"""`make gpu-check`: run every GPU variant of a small bundle on this machine, with parity, timings and threads.

    python tools/gpu_check.py [--batches 1,8,64,256] [--repeats 30] [--variants NAME,...] [--json OUT]

Exports a small random-init RGB DCGAN (64x64, max batch 256; fp32 and fp16 graphs, torch fp16/bf16 weights,
TensorRT engines when TensorRT is installed), then, for every variant the table of backends says can run on
CUDA here (torch CUDA fp32/fp16/bf16, each eager, channels_last, CUDA graphs, both, and torch.compile
max-autotune; onnxruntime CUDA and its TensorRT provider; native TensorRT engines):

- parity against the torch fp32 CPU reference on 16 seeds (max |diff| in uint8 levels, PSNR), gated by the
  precision table's GPU limit (``ganrt.precisions``);
- host-to-host ``generate`` latency (median of ``--repeats`` calls after warm-up) and images/s at each batch;
- a threaded case: 8 threads sharing the Generator, mixed batch sizes, every result bit-equal to the same
  call made alone.

Prints one table (and JSON with --json). Without a GPU it says what is missing and exits 0; exit status 1 when
a variant that should run crashed, missed its parity limit or answered a threaded call wrongly.
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


def small_bundle(work: Path, *, engines: bool, max_batch: int, log) -> Path:
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
    try:
        export_checkpoint(ckpt, bundle, options=ExportOptions(precisions=("fp32", "fp16"), tensorrt=engines,
                                                              max_batch=max_batch, torch_precisions=("fp16", "bf16")),
                          progress=log)
    except Exception as e:  # engines or fp16 may fail on an odd setup: keep what can be checked
        log(f"export with fp16{' + engines' if engines else ''} failed ({type(e).__name__}: {e}); fp32 only")
        export_checkpoint(ckpt, bundle, options=ExportOptions(precisions=("fp32",), max_batch=max_batch),
                          progress=log)
    return bundle


def threaded_case(gen, threads: int = 8, calls: int = 64) -> dict:
    """``calls`` requests (batch 1..5, distinct seeds) made by ``threads`` threads vs the same calls alone."""
    requests, seed = [], 0
    for i in range(calls):
        b = 1 + i % 5
        requests.append(list(range(seed, seed + b)))
        seed += b

    def call(i):
        return gen.generate(seeds=requests[i], labels=[s % 10 for s in requests[i]])

    alone = [call(i) for i in range(calls)]
    results, errors, _ = threaded(call, calls, threads)
    import numpy as np

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


def check_variant(bundle: Path, name: str, reference, batches: list[int], repeats: int) -> dict:
    from ganrt.errors import GanrtError
    from ganrt.parity import image_parity, json_safe
    from ganrt.precisions import PRECISIONS
    from ganrt.runtime import load

    row: dict = {"variant": name}
    try:
        with load(bundle, variant=name) as gen:
            gen.warmup(batches)
            seeds = list(range(len(reference)))
            images = gen.generate(seeds=seeds, labels=[s % 10 for s in seeds])
            parity = image_parity(reference, images, nonfinite=0)
            limit = PRECISIONS[gen.precision].gpu_max_abs_diff
            row.update(reason=gen.reason, parity=json_safe(parity), limit=limit,
                       passed=parity["max_abs_diff"] <= limit,
                       timings={b: time_batch(gen, b, repeats) for b in batches},
                       threaded=threaded_case(gen))
            if row["threaded"]["wrong"]:
                row["passed"] = False
    except GanrtError as e:  # not available here (no engine for this GPU, precision not exported...)
        row["skipped"] = str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a crash of a variant that should run
        row.update(error=f"{type(e).__name__}: {e}", passed=False)
    return row


def table(rows: list[dict], batches: list[int]) -> str:
    head = f"{'variant':32s} {'parity':>14s}  " + "  ".join(f"{'B=' + str(b):>16s}" for b in batches) + "  threads"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['variant']:32s} skipped: {r['skipped']}")
            continue
        if "error" in r:
            lines.append(f"{r['variant']:32s} ERROR {r['error']}")
            continue
        p = r["parity"]
        par = f"{'ok' if r['passed'] else 'FAIL'} {p['max_abs_diff']:.0f}/{r['limit']:g} {p['psnr_db']}dB"
        cells = "  ".join(f"{t['median_ms']:7.3f}ms {t['images_per_s']:6.0f}/s"[:16].rjust(16)
                          for t in (r["timings"][b] for b in batches))
        th = r["threaded"]
        lines.append(f"{r['variant']:32s} {par:>14s}  {cells}  {th['wrong']}/{th['calls']} wrong")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,8,64,256", help="batch sizes timed (default 1,8,64,256)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant and batch (default 30)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: every CUDA one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    batches = sorted({int(b) for b in args.batches.split(",")})

    missing = missing_gpu_message()
    if missing is not None:
        print(f"gpu-check: skipped: {missing}. Nothing GPU-side can run here (torch CUDA, onnxruntime CUDA/"
              "TensorRT providers, TensorRT engines); run `make gpu-check` on a machine with an NVIDIA GPU, "
              "CUDA torch and `pip install ganrt[gpu]`.")
        return 0

    from ganrt.bundle import Bundle
    from ganrt.runtime import load
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import here, runnable

    avail = Availability.probe()
    print(f"gpu-check on {avail.gpu} ({avail.sm}); TensorRT {avail.tensorrt or 'not installed'}; "
          f"onnxruntime providers: {', '.join(avail.ort_providers) or 'none'}", flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ganrt-gpu-check-") as tmp:
        bundle = small_bundle(Path(tmp), engines=avail.tensorrt is not None, max_batch=max(batches),
                              log=lambda m: print(f"  {m}", file=sys.stderr))
        manifest = Bundle.open(bundle).to_dict()
        for name, why in here(manifest, avail)["unavailable"].items():
            print(f"  {name}: {why}")
        names = args.variants.split(",") if args.variants else [
            c.variant for c in runnable(manifest, avail).choices if c.device == "cuda"]
        with load(bundle, backend="torch", device="cpu") as ref_gen:
            reference = ref_gen.generate(seeds=range(16), labels=[s % 10 for s in range(16)])
        for name in names:
            print(f"  checking {name} ...", file=sys.stderr, flush=True)
            rows.append(check_variant(bundle, name, reference, batches, args.repeats))
    print(table(rows, batches))
    if args.json:
        args.json.write_text(json.dumps({"gpu": avail.gpu, "sm": avail.sm, "tensorrt": avail.tensorrt,
                                         "batches": batches, "results": rows}, indent=2, default=str))
    return 1 if any(r.get("passed") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
