"""Measure the runtime's concurrency contract on a bundle: threaded vs single-thread throughput and
correctness per CPU variant, the cost of cycling batch sizes after warmup(), and what padding to a batch
bucket changes.

    python tools/runtime_concurrency.py BUNDLE [--calls 320] [--threads 8] [--json out.json]

Per variant:
- ``wrong``/``errors``: of ``--calls`` calls (batch sizes 1..4, distinct seeds) made by ``--threads`` threads
  sharing one Generator, how many returned other images than the same call made alone (or raised);
- ``img_s_1`` / ``img_s_threads``: images per second of those calls made one after another / by the threads;
- ``cycle_ratio``: after ``warmup()``, the median call cost when every call changes the batch size (1..24 in
  turn, past max_batch too) over the median cost of repeating one size; the median, p90 and worst over sizes;
- ``pad_max_diff`` (static-shape backends): the largest pixel difference between a seed's image drawn in a
  batch padded up to its bucket and drawn at its own exact batch shape; ``native_max_diff``: the largest
  difference the same variant shows for a seed between two exact batch shapes (what it already allows).
Ratios within one run only: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def _requests(n: int) -> list[list[int]]:
    out, seed = [], 0
    for i in range(n):
        b = 1 + i % 4
        out.append(list(range(seed, seed + b)))
        seed += b
    return out


def _labels(gen, seeds):
    return [s % gen.spec.num_classes for s in seeds] if gen.spec.conditional else None


def _caller(gen, requests):
    """i -> the images of request i (labels from its seeds on a conditional generator)."""
    return lambda i: gen.generate(seeds=requests[i], labels=_labels(gen, requests[i]))


def threaded(call, n: int, threads: int):
    """``call(i)`` for every i < n from ``threads`` threads at once (thread k makes calls k, k + threads, ...).
    Returns (results by i, None where the call raised; the errors, one line each; seconds from the common start).
    The threaded test and tools/gpu_check.py use it too."""
    results: list = [None] * n
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def work(k):
        start.wait()
        for i in range(k, n, threads):
            try:
                results[i] = call(i)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"request {i}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return results, errors, time.perf_counter() - t0


def cycle_ratio(gen, sizes=range(1, 25), rounds: int = 5) -> dict[str, float]:
    gen.warmup()

    def once(b):
        seeds = list(range(b))
        t0 = time.perf_counter()
        gen.generate(seeds=seeds, labels=_labels(gen, seeds))
        return time.perf_counter() - t0
    cycling = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            cycling[b].append(once(b))
    ratios = []
    for b in sizes:
        warm = statistics.median(once(b) for _ in range(rounds + 2))
        ratios.append(statistics.median(cycling[b]) / warm)
    return {"median": statistics.median(ratios), "p90": float(np.percentile(ratios, 90)), "max": max(ratios)}


def padding_effect(bundle, gen) -> dict[str, float] | None:
    """(static shapes only) max |diff| of padded vs exact-shape images, and exact vs exact between batch sizes."""
    runner = gen._runner
    if not runner.static_shapes:
        return None
    from ganrt.runtime import BACKENDS, LoadOptions

    exact = BACKENDS[gen.backend].runner_class()(bundle, gen.choice, LoadOptions(threads=getattr(runner, "threads",
                                                                                                   None)))
    exact.buckets = tuple(range(1, runner.max_batch + 1))  # every batch at its own shape
    seeds = list(range(500, 500 + runner.max_batch))
    labels = np.array(_labels(gen, seeds)) if gen.spec.conditional else None
    from ganrt.latents import latents_from_seeds

    z = latents_from_seeds(seeds, gen.spec.latent_dim)
    pad, native = 0, 0
    full = exact.infer(z, labels)
    for b in range(1, runner.max_batch + 1):
        lab = None if labels is None else labels[:b]
        padded = runner.infer(z[:b], lab)
        alone = exact.infer(z[:b], lab)
        pad = max(pad, int(np.abs(padded.astype(np.int16) - alone.astype(np.int16)).max()))
        native = max(native, int(np.abs(alone.astype(np.int16) - full[:b].astype(np.int16)).max()))
    exact.close()
    return {"pad_max_diff": pad, "native_max_diff": native}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--calls", type=int, default=320)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--variants", default=None, help="comma-separated variant names (default: every CPU variant)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from ganrt.bundle import Bundle
    from ganrt.runtime import Availability, load
    from ganrt.runtime.selection import runnable

    bundle = Bundle.open(args.bundle)
    names = args.variants.split(",") if args.variants else [
        c.variant for c in runnable(bundle.to_dict(), Availability.probe()).choices
        if c.device == "cpu" and "compile" not in c.options]
    requests = _requests(args.calls)
    rows = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gen = load(bundle, variant=name)
        with gen:
            gen.warmup()
            n_images = sum(len(r) for r in requests)
            t0 = time.perf_counter()
            call = _caller(gen, requests)
            reference = [call(i) for i in range(len(requests))]
            single = time.perf_counter() - t0
            results, errors, multi = threaded(call, len(requests), args.threads)
            wrong = sum(1 for r, ref in zip(results, reference, strict=True)
                        if r is not None and not np.array_equal(r, ref))
            row = {"variant": gen.variant, "calls": len(requests), "wrong": wrong, "errors": len(errors),
                   "img_s_1": n_images / single, "img_s_threads": n_images / multi,
                   "threads": args.threads, "concurrency": gen.concurrency,
                   "cycle_ratio": cycle_ratio(gen), "padding": padding_effect(bundle, gen)}
        rows.append(row)
        pad = row["padding"] or {}
        print(f"{row['variant']:24s} wrong {wrong}/{len(requests)} errors {len(errors)}  img/s 1 thread "
              f"{row['img_s_1']:8.0f}  {args.threads} threads {row['img_s_threads']:8.0f} "
              f"({row['img_s_threads'] / row['img_s_1']:.2f}x)  cycling 1..24 after warmup "
              f"{row['cycle_ratio']['median']:.2f}x (p90 over sizes {row['cycle_ratio']['p90']:.2f}x) a warm call"
              + (f"  padded vs exact shape max |d| {pad['pad_max_diff']}, exact shapes vs each other "
                 f"{pad['native_max_diff']}" if pad else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if any(r["wrong"] or r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
