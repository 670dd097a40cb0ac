"""Measure what Ray Serve costs against `ganrt serve` on one machine: the same bundle, the same closed-loop load.

    python tools/scaleout_overhead.py BUNDLE [--concurrency 8,64] [--seeds-per-request 16] [--duration 10]
        [--rounds 3] [--max-batch 64] [--max-delay-ms 5] [--json out.json]

In each round, each server in turn (`ganrt serve BUNDLE --threads C`, then `ganrt serve BUNDLE --ray` with one
replica of C CPUs, then C replicas of one CPU, C = this machine's cores; each --ray run starts and stops its own
local cluster) gets `ganrt loadtest` (v1, seeds in, npy out) at every concurrency level, and is stopped before the
next starts. Rounds interleave the servers so that a change in the machine's load (a shared machine) falls on
all of them. Prints, per server and level, the median over rounds of img/s, p50 and p99, and the median of the
per-round ratios to `ganrt serve`. Compare ratios within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--concurrency", default="8,64")
    ap.add_argument("--seeds-per-request", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    from ganrt.serve.loadtest import loadtest
    from ganrt.serve.process import ServeProcess

    cores = os.cpu_count() or 1
    batching = ["--max-batch", str(a.max_batch), "--max-delay-ms", str(a.max_delay_ms)]
    servers = {"ganrt serve": ["--threads", str(cores)],
               "--ray, 1 replica": ["--ray", "--replicas", "1", "--num-cpus", str(cores)],
               f"--ray, {cores} replicas": ["--ray", "--replicas", str(cores), "--num-cpus", "1"]}
    levels = [int(c) for c in a.concurrency.split(",")]
    rounds: list[dict] = []  # per round: {server: {clients: {images_per_s, p50_ms, p99_ms, errors}}}
    for k in range(a.rounds):
        results = {}
        for name, args in servers.items():
            print(f"round {k + 1}, {name}: starting", file=sys.stderr, flush=True)
            with ServeProcess(a.bundle, args + batching, timeout=300, stop_wait=120) as server:
                run = loadtest(server.url, concurrency=levels, seeds_per_request=a.seeds_per_request,
                               duration=a.duration,
                               progress=lambda s, n=name: print(f"  {n}: {s}", file=sys.stderr, flush=True))
            results[name] = {r["concurrency"]: {k: r[k] for k in ("images_per_s", "p50_ms", "p99_ms", "errors")}
                             for r in run["levels"]}
        rounds.append(results)
    print(f"{'server':<22} {'clients':>7} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}   vs ganrt serve "
          "(median of the per-round ratios): img/s p50 p99")
    for name in servers:
        for c in levels:
            rows = [r[name][c] for r in rounds]
            base = [r["ganrt serve"][c] for r in rounds]
            med = {key: statistics.median(row[key] for row in rows) for key in ("images_per_s", "p50_ms", "p99_ms")}
            ratio = {key: statistics.median(row[key] / b[key] for row, b in zip(rows, base, strict=True))
                     for key in ("images_per_s", "p50_ms", "p99_ms")}
            errors = sum(sum(row["errors"].values()) for row in rows)
            print(f"{name:<22} {c:>7} {med['images_per_s']:>8.0f} {med['p50_ms']:>8.1f} {med['p99_ms']:>8.1f} "
                  f"{errors:>6}   {ratio['images_per_s']:.2f} {ratio['p50_ms']:.2f} {ratio['p99_ms']:.2f}")
    if a.json:
        a.json.write_text(json.dumps({"bundle": str(a.bundle), "seeds_per_request": a.seeds_per_request,
                                      "duration_s": a.duration, "cores": cores, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
