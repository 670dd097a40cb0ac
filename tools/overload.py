"""Overload a `ganrt serve` with clients of which a share disconnect early, and read what the server computed.

    python tools/overload.py BUNDLE [--clients 256] [--gone 0.5] [--gone-after-ms 100] [--duration 5] \
        [--seeds 16] [--declare-timeout] [--json] [-- SERVE OPTIONS...]
    nice -n 15 python tools/overload.py --url http://127.0.0.1:8000 ...     # a running server; the clients
                                                                             # yield the CPU to it

Starts `ganrt serve BUNDLE` (with the options after `--`), then for --duration seconds runs --clients closed-loop
clients, each sending /v1/generate requests of --seeds seeds: a --gone share of them close the connection
--gone-after-ms after sending (a client that timed out) and send the next one after a 100 ms pause; the others
wait for their answer on a kept-alive connection (200; after a 503 they wait its Retry-After, 1 s; after a 504
the same 100 ms pause). It reports, from the clients and from the server's /metrics:
images asked by the clients that went away, images the server computed for nobody (`ganrt_images_wasted_total`,
which also counts requests that expired while computing: an upper bound), images dropped from the queue by
reason, latency percentiles of the answered requests, statuses, and whether the server stayed ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np


def _request_bytes(host: str, body: bytes, keep_alive: bool, timeout_s: float | None = None) -> bytes:
    extra = b"X-Request-Timeout: %.3f\r\n" % timeout_s if timeout_s else b""
    return (b"POST /v1/generate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: %s\r\n%s\r\n%s" % (host.encode(), len(body), b"keep-alive" if keep_alive else b"close",
                                           extra, body))


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection) of one HTTP/1.1 answer, its body read."""
    status = int((await reader.readline()).split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            keep = False
    await reader.readexactly(length)
    return status, keep


async def _client(i: int, host: str, port: int, *, gone: bool, gone_after: float, seeds: int, until: float,
                  out: dict, declare: bool, pause: float = 0.1, retry_after: float = 1.0) -> None:
    """A closed loop of requests: a waiting client keeps its connection alive; a gone one opens a connection,
    sends, and closes it ``gone_after`` later when no answer came (then pauses before the next)."""
    n = 0
    conn = None
    while time.monotonic() < until:
        first = (i * 1_000_003 + n * 7919) % 2**40
        body = json.dumps({"seeds": list(range(first, first + seeds))}).encode()
        n += 1
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            reader, writer = conn
            writer.write(_request_bytes(host, body, keep_alive=not gone, timeout_s=gone_after if gone and declare
                                        else None))
            await writer.drain()
            if gone:
                try:
                    status, _ = await asyncio.wait_for(_answer(reader), gone_after)
                except asyncio.TimeoutError:
                    out["gone_requests"] += 1
                    out["gone_images"] += seeds
                    writer.close()  # the disconnect
                    conn = None
                    await asyncio.sleep(pause)  # and, as a client that timed out would, a pause before retrying
                    continue
                keep = False
            else:
                status, keep = await _answer(reader)
            if not keep:
                writer.close()
                conn = None
            out["status"][status] += 1
            if status == 200:
                out["latency_ms"].append((time.perf_counter() - t0) * 1e3)
                out["served_images"] += seeds
            else:
                await asyncio.sleep(retry_after if status == 503 else pause)  # Retry-After honoured
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            out["broken"] += 1
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(pause)
    if conn is not None:
        conn[1].close()


def _metrics(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name in ("ganrt_images_wasted_total", "ganrt_images_total", "ganrt_images_dropped_total"):
                values[s.name + "".join(f"{{{v}}}" for v in s.labels.values())] = s.value
    return values


def overload(url: str, *, clients: int = 256, gone_share: float = 0.5, gone_after_s: float = 0.1,
             duration_s: float = 5.0, seeds: int = 16, declare: bool = False) -> dict:
    """Run the clients against the server at ``url``; the figures (see the module's docstring)."""
    import httpx

    host, port = url.removeprefix("http://").split(":")
    out = {"status": Counter(), "latency_ms": [], "gone_requests": 0, "gone_images": 0, "served_images": 0,
           "connect_errors": 0, "broken": 0}
    before = _metrics(url)
    ready_during = []

    async def main():
        until = time.monotonic() + duration_s
        gone = int(round(clients * gone_share))
        tasks = [asyncio.ensure_future(_client(i, host, int(port), gone=i < gone, gone_after=gone_after_s,
                                               seeds=seeds, until=until, out=out, declare=declare))
                 for i in range(clients)]
        async with httpx.AsyncClient(timeout=10) as probe:
            while time.monotonic() < until:
                await asyncio.sleep(0.5)
                ready_during.append((await probe.get(f"{url}/v2/health/ready")).status_code)
        await asyncio.gather(*tasks)

    try:
        import uvloop  # the clients' own overhead, lower: they share the machine with the server
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    time.sleep(1.0)  # batches that were computing when the clients stopped finish
    after = _metrics(url)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    lat = np.array(out["latency_ms"] or [float("nan")])
    def by_reason(prefix: str) -> dict[str, float]:
        return {k.split("{")[1].rstrip("}"): v for k, v in delta.items() if k.startswith(prefix)}

    wasted = by_reason("ganrt_images_wasted")
    return {
        "clients": clients, "gone_share": gone_share, "gone_declare_timeout": declare,
        "gone_after_ms": gone_after_s * 1e3, "duration_s": duration_s, "seeds_per_request": seeds,
        "statuses": dict(out["status"]), "gone_requests": out["gone_requests"],
        "gone_images_asked": out["gone_images"], "served_images": out["served_images"],
        "computed_images": delta.get("ganrt_images_total", 0.0) + sum(wasted.values()),
        "wasted_images": wasted, "computed_for_gone_share": wasted.get("cancelled", 0.0) / max(1, out["gone_images"]),
        "dropped_images": by_reason("ganrt_images_dropped"),
        "served_p50_ms": float(np.percentile(lat, 50)), "served_p99_ms": float(np.percentile(lat, 99)),
        "served_max_ms": float(lat.max()), "ready_during": ready_during,
        "ready_after": httpx.get(f"{url}/v2/health/ready", timeout=10).status_code,
        "connect_errors": out["connect_errors"], "broken": out["broken"],
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, nargs="?", help="start `ganrt serve BUNDLE` (or give --url)")
    p.add_argument("--url", default=None, help="load this running server instead of starting one")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--gone", type=float, default=0.5, help="share of clients that disconnect early")
    p.add_argument("--gone-after-ms", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--declare-timeout", action="store_true",
                   help="the clients that go away say when (X-Request-Timeout), as a gRPC client's deadline does")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from ganrt.serve.process import ServeProcess

    def run(url: str) -> dict:
        return overload(url, clients=a.clients, gone_share=a.gone, gone_after_s=a.gone_after_ms / 1e3,
                        duration_s=a.duration, seeds=a.seeds, declare=a.declare_timeout)

    if a.url:
        figures = run(a.url)
    elif a.bundle:
        with ServeProcess(a.bundle, serve_args) as server:
            figures = run(server.url)
    else:
        p.error("give BUNDLE or --url")
    if a.json:
        print(json.dumps(figures, indent=2))
        return
    for k, v in figures.items():
        print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
