"""Measure what the serving fronts cost on one machine: `ganrt serve` over HTTP and gRPC, the real Triton (the
nvidia-pytriton wheel's tritonserver, ganrt's runtime in its Python backend) over HTTP and gRPC, and Ray Serve,
all running the same variant of the same bundle under the same closed-loop load.

    python tools/scaleout_overhead.py BUNDLE [--make] [--concurrency 1,8,64] [--seeds-per-request 16]
        [--duration 10] [--rounds 1] [--max-batch 64] [--max-delay-ms 5] [--variant onnxruntime-fp32]
        [--servers serve,triton,ray] [--json out.json]

``--make`` first writes BUNDLE, if there is none, as the issue's generator: a 64x64 RGB DCGAN (latent 100, width
64, random weights scaled to draw varied images: tools/cpu_fastpath_probe.py) exported in fp32.

In each round, each server in turn is started, loaded by `ganrt loadtest` at every concurrency level with
``--check BUNDLE`` (every answer compared with offline generation; the same variant measured offline at the
server's max batch in the same call: the served/offline ratio), and stopped before the next starts:

- ``ganrt serve BUNDLE --variant V --threads C --grpc-port P``: HTTP (OIP v2: latents in, binary uint8 out) and
  gRPC (the same tensors through tritonclient.grpc.aio), one server for both;
- ``ganrt triton BUNDLE --variants V`` (the model runs V with C threads; Triton's dynamic batcher with the same
  max batch and delay): HTTP and gRPC;
- ``ganrt serve BUNDLE --ray``: one replica of C CPUs, and C replicas of one CPU (each starts and stops its own
  local Ray cluster): HTTP.

C is this machine's core count. Rounds interleave the servers so that a change in the machine's load falls on
all of them. Prints, per server, protocol and level, the median over rounds of img/s, p50 and p99, the
served/offline ratio, and the median of the per-round ratios to `ganrt serve` over HTTP, with the load average
before and after each server's run. Compare ratios within one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

KEYS = ("images_per_s", "p50_ms", "p99_ms", "served_vs_offline")
BASE = ("ganrt serve", "http")


def make_bundle(path: Path) -> None:
    """The issue's 64x64 RGB DCGAN (random weights drawing varied images), exported in fp32 at max batch 64."""
    from cpu_fastpath_probe import build_generator

    from ganrt.export import ExportOptions, export

    g, spec = build_generator()
    export(g, path, spec=spec, options=ExportOptions(precisions=("fp32",), max_batch=64))


def servers(a, cores: int) -> dict[str, dict]:
    """{server: {"start": () -> a context manager with .url (and .grpc), "protocols", "model"}}."""
    from ganrt.serve.process import ServeProcess, free_port
    from ganrt.serve.triton_server import TritonProcess

    batching = ["--max-batch", str(a.max_batch), "--max-delay-ms", str(a.max_delay_ms)]
    pinned = ["--variant", a.variant, "--threads", str(cores)]

    def serve():
        port = free_port()
        server = ServeProcess(a.bundle, [*pinned, *batching, "--grpc-port", str(port)], timeout=300, stop_wait=120)
        server.grpc = f"127.0.0.1:{port}"
        return server

    def triton():
        return TritonProcess(a.bundle, ["--variants", a.variant, "--device", "cpu", "--max-batch", str(a.max_batch),
                                        "--max-queue-delay-us", str(round(a.max_delay_ms * 1000))], timeout=600,
                             stop_wait=120)

    def ray(replicas: int, cpus: int):
        return lambda: ServeProcess(a.bundle, ["--variant", a.variant, *batching, "--ray", "--replicas",
                                               str(replicas), "--num-cpus", str(cpus)], timeout=300, stop_wait=120)

    table = {"ganrt serve": {"start": serve, "protocols": ("http", "grpc"), "model": None},
             "Triton (Python backend)": {"start": triton, "protocols": ("http", "grpc"),
                                         "model": f"{a.bundle.resolve().name}-{a.variant}"},
             "--ray, 1 replica": {"start": ray(1, cores), "protocols": ("http",), "model": None},
             f"--ray, {cores} replicas": {"start": ray(cores, 1), "protocols": ("http",), "model": None}}
    wanted = {"serve": ["ganrt serve"], "triton": ["Triton (Python backend)"],
              "ray": ["--ray, 1 replica", f"--ray, {cores} replicas"]}
    return {name: table[name] for key in a.servers.split(",") for name in wanted[key.strip()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--make", action="store_true", help="write BUNDLE (the 64x64 RGB DCGAN) first if it is absent")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--seeds-per-request", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--variant", default="onnxruntime-fp32", help="the variant every server runs")
    ap.add_argument("--servers", default="serve,triton,ray", help="which of serve, triton, ray to measure")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.make and not (a.bundle / "manifest.json").exists():
        print(f"writing {a.bundle}: 64x64 RGB DCGAN, fp32", file=sys.stderr, flush=True)
        make_bundle(a.bundle)

    from ganrt.serve.loadtest import loadtest

    cores = os.cpu_count() or 1
    fronts = servers(a, cores)
    levels = [int(c) for c in a.concurrency.split(",")]
    rounds: list[dict] = []  # per round: {"server|protocol": {clients: {KEYS..., errors, differ}}}
    load: dict[str, list] = {}  # server -> load averages (1 min) before and after, per round
    for k in range(a.rounds):
        results = {}
        for name, front in fronts.items():
            print(f"round {k + 1}, {name}: starting", file=sys.stderr, flush=True)
            before = os.getloadavg()[0]
            with front["start"]() as server:
                for protocol in front["protocols"]:
                    url = server.grpc if protocol == "grpc" else server.url
                    run = loadtest(url, concurrency=levels, seeds_per_request=a.seeds_per_request,
                                   duration=a.duration, protocol="grpc" if protocol == "grpc" else "v2",
                                   model=front["model"], check=a.bundle,
                                   progress=lambda s, n=f"{name} {protocol}": print(f"  {n}: {s}", file=sys.stderr,
                                                                                   flush=True))
                    results[f"{name}|{protocol}"] = {
                        r["concurrency"]: {**{key: r.get(key) for key in KEYS}, "errors": r["errors"],
                                           "differ": (run["check"] or {}).get("differ"),
                                           "offline_images_per_s": run["offline"]["images_per_s"]}
                        for r in run["levels"]}
            load.setdefault(name, []).append((round(before, 2), round(os.getloadavg()[0], 2)))
        rounds.append(results)

    base = "|".join(BASE)
    print(f"\n{cores} cores; {a.bundle.resolve().name} ({a.variant}), {a.seeds_per_request} seeds per request, "
          f"{a.duration:g} s per level, {a.rounds} round(s); medians over rounds; 'vs' = img/s / ganrt serve "
          "HTTP's at the same level, median of the per-round ratios\n")
    print("| server | protocol | clients | img/s | p50 ms | p99 ms | errors | differ | served/offline | vs | "
          "load avg (before-after) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, front in fronts.items():
        for protocol in front["protocols"]:
            key = f"{name}|{protocol}"
            for c in levels:
                rows = [r[key][c] for r in rounds]
                med = {m: statistics.median(row[m] for row in rows) for m in KEYS}
                vs = (statistics.median(row["images_per_s"] / r[base][c]["images_per_s"]
                                        for row, r in zip(rows, rounds, strict=True)) if base in rounds[0] else None)
                errors = sum(sum(row["errors"].values()) for row in rows)
                differ = sum(row["differ"] or 0 for row in rows)
                print(f"| {name} | {protocol} | {c} | {med['images_per_s']:.0f} | {med['p50_ms']:.1f} | "
                      f"{med['p99_ms']:.1f} | {errors} | {differ} | {med['served_vs_offline']:.2f} | "
                      f"{'-' if vs is None else f'{vs:.2f}'} | "
                      f"{', '.join(f'{b:g}-{e:g}' for b, e in load[name])} |")
    offline = [r[key][c]["offline_images_per_s"] for r in rounds for key in r for c in levels]
    print(f"\noffline {a.variant} at batch {a.max_batch} (measured beside each server's load): "
          f"{min(offline):.0f}-{max(offline):.0f} img/s")
    if a.json:
        a.json.write_text(json.dumps({"bundle": str(a.bundle), "variant": a.variant, "cores": cores,
                                      "seeds_per_request": a.seeds_per_request, "duration_s": a.duration,
                                      "load_average": load, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
