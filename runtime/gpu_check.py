"""`make gpu-check` (``python -m ganrt.runtime.gpu_check``): run every GPU backend present on this machine.

Exports a small random-init DCGAN (through ganrt.export: this is a script, not the runtime library),
then runs each GPU variant that can run here — torch CUDA fp32/fp16 (eager and CUDA graphs),
onnxruntime CUDA (IO binding, CUDA graphs) and its TensorRT provider, native TensorRT engines — and
prints, per variant, parity against the torch fp32 CPU reference (max |diff| in uint8 levels, PSNR) and
end-to-end latency (median of host-to-host ``generate`` calls). Without a GPU it says what is missing
and exits 0. Exit status 1 when a variant that should run crashed or missed its parity limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# max |diff| in uint8 levels against the torch fp32 CPU reference
PARITY_LIMIT = {"fp32": 2.0, "fp16": 8.0, "bf16": 16.0, "int8": 64.0}


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


def _tiny_bundle(work: Path, *, engines: bool, log) -> Path:
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
    ckpt = work / "tiny.safetensors"
    save_checkpoint(ckpt, Checkpoint(spec=spec, tensors={f"G.{k}": v for k, v in g.state_dict().items()}))
    bundle = work / "bundle"
    try:
        export_checkpoint(ckpt, bundle, options=ExportOptions(precisions=("fp32", "fp16"), tensorrt=engines),
                          progress=log)
    except Exception as e:  # engines or fp16 may fail on an odd setup: keep what can be checked
        log(f"export with fp16{' + engines' if engines else ''} failed ({type(e).__name__}: {e}); fp32 only")
        export_checkpoint(ckpt, bundle, options=ExportOptions(precisions=("fp32",)), progress=log)
    return bundle


def _variants(avail) -> list[dict]:
    out = [dict(backend="torch", precision=p, device="cuda", cuda_graphs=g)
           for p in ("fp32", "fp16") for g in (False, True)]
    if "CUDAExecutionProvider" in avail.ort_providers:
        out += [dict(backend="onnxruntime", precision=p, device="cuda", provider="cuda", cuda_graphs=g)
                for p in ("fp32", "fp16") for g in (False, True)]
    if "TensorrtExecutionProvider" in avail.ort_providers:
        out += [dict(backend="onnxruntime", precision=p, device="cuda", provider="tensorrt") for p in ("fp32", "fp16")]
    if avail.tensorrt:
        out += [dict(backend="tensorrt", precision=p, device="cuda", cuda_graphs=g)
                for p in ("fp32", "fp16") for g in (False, True)]
    return out


def _time(gen, seeds, labels, repeats: int) -> dict:
    for _ in range(5):
        gen.generate(seeds=seeds, labels=labels)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        gen.generate(seeds=seeds, labels=labels)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganrt.runtime.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="batch size of the parity and timing runs (default 16)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per variant (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    missing = missing_gpu_message()
    if missing is not None:
        print(f"gpu-check: skipped: {missing}. Nothing GPU-side can run here (torch CUDA, onnxruntime CUDA/"
              "TensorRT providers, TensorRT engines); run `make gpu-check` on a machine with an NVIDIA GPU, "
              "CUDA torch and `pip install ganrt[gpu]`.")
        return 0

    import numpy as np

    from ganrt.errors import GanrtError
    from ganrt.parity import image_parity, json_safe
    from ganrt.runtime import load
    from ganrt.runtime.machine import Availability

    avail = Availability.probe()
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    log(f"gpu-check on {avail.gpu} ({avail.sm}); TensorRT {avail.tensorrt or 'not installed'}; "
        f"onnxruntime providers: {', '.join(avail.ort_providers) or 'none'}")
    if importlib.util.find_spec("tensorrt") is None:
        log("  TensorRT not installed: native engines skipped (`pip install ganrt[gpu]`)")
    results, failed = [], False
    with tempfile.TemporaryDirectory(prefix="ganrt-gpu-check-") as tmp:
        bundle = _tiny_bundle(Path(tmp), engines=avail.tensorrt is not None, log=log)
        seeds = list(range(args.batch))
        labels = [s % 10 for s in seeds]
        with load(bundle, backend="torch", device="cpu") as ref_gen:
            reference = ref_gen.generate(seeds=seeds, labels=labels)
        for options in _variants(avail):
            row = {**options}
            try:
                with load(bundle, **options) as gen:
                    images = gen.generate(seeds=seeds, labels=labels)
                    parity = image_parity(reference, images, nonfinite=0)
                    row.update(variant=gen.variant, reason=gen.reason, parity=json_safe(parity),
                               **_time(gen, seeds, labels, args.repeats))
                    row["passed"] = parity["max_abs_diff"] <= PARITY_LIMIT[gen.precision]
                    failed |= not row["passed"]
                    if not np.array_equal(images, gen.generate(seeds=seeds, labels=labels)):
                        row["passed"], failed = False, True
                        row["error"] = "not deterministic: a second call gave other images"
            except GanrtError as e:  # not available here (no engine for this GPU, precision not exported...)
                row.update(skipped=str(e))
            except Exception as e:
                row.update(error=f"{type(e).__name__}: {e}")
                failed = True
            results.append(row)
            if not args.json:
                name = row.get("variant") or "-".join(str(v) for v in options.values() if isinstance(v, str))
                if "skipped" in row:
                    print(f"  {name:34s} skipped: {row['skipped']}")
                elif "parity" in row:
                    p = row["parity"]
                    print(f"  {name:34s} {'ok  ' if row['passed'] else 'FAIL'} max|d| {p['max_abs_diff']:.0f} "
                          f"PSNR {p['psnr_db']} dB  median {row['median_ms']:.3f} ms (batch {args.batch})"
                          + (f"  {row['error']}" if "error" in row else ""))
                else:
                    print(f"  {name:34s} ERROR {row['error']}")
    if args.json:
        print(json.dumps({"gpu": avail.gpu, "sm": avail.sm, "tensorrt": avail.tensorrt, "batch": args.batch,
                          "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
