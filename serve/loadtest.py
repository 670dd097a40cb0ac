"""``ganrt loadtest URL``: closed-loop load on any server speaking /v1/generate or OIP v2 over HTTP or gRPC
(ganrt serve, its Ray deployment, Triton), at several concurrency levels.

At each level, ``concurrency`` clients send requests of ``seeds_per_request`` fresh seeds back to back for
``duration`` seconds; every answer's latency, status and (with ``check``) pixels are kept. Throughput counts
the images answered within the window (the requests still in flight when it closes are answered and checked,
but the drain, when fewer clients are left, does not dilute the figure). v1 sends seeds and
reads npy; v2 sends latents ``z`` drawn from the seeds with ``ganrt.latents`` (so it needs no ganrt-specific
input and works against Triton), labels ``[B, 1]`` and asks for the binary output; grpc sends the same tensors
through ``tritonclient.grpc.aio`` (URL ``host:port``; one channel per client) and reads ``raw_output_contents``.
Formed batch sizes come from the server's ``/metrics`` when it has ganrt's (HTTP only). With ``check`` a
bundle, every answer is compared with offline generation of the same seeds by the same variant (what a ganrt
server reports, or the ``variant`` parameter of the model's Triton config), after the load (so checking does not
steal the server's CPU), and the offline throughput of that variant at the server's max batch is measured in the
same run: the served-vs-offline ratio.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import ConfigError

PROTOCOLS = ("v1", "v2", "grpc")


@dataclass
class Level:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    images: int = 0
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0  # the level's window: its clients send until it ends
    in_window: int = 0  # images answered within the window (throughput; the drain after it is not counted)
    requests_in_window: int = 0
    answers: list[tuple[int, int, str]] = field(default_factory=list)  # (first seed, n, sha1 of the pixels)
    batches: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {"concurrency": self.concurrency, "requests": self.requests, "images": self.images,
                "seconds": self.seconds, "images_per_s": self.in_window / self.seconds if self.seconds else 0.0,
                "requests_per_s": self.requests_in_window / self.seconds if self.seconds else 0.0,
                "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(np.max(lat)),
                "errors": dict(self.errors), "batch_images": self.batches}


class Failed(Exception):
    """A request that got no images; its text is how the report counts it ("HTTP 503", "gRPC UNAVAILABLE")."""


class Client:
    """How to ask one server for the images of some seeds (v1, v2 or grpc), over one connection per worker."""

    def __init__(self, url: str, protocol: str, spec: dict[str, Any], model: str | None) -> None:
        self.url = self.address(url, protocol)
        self.protocol = protocol
        self.spec = spec
        self.model = model

    @staticmethod
    def address(url: str, protocol: str) -> str:
        """``url`` as the protocol's client takes it: http://host:port, or host:port for gRPC."""
        return url.rstrip("/").removeprefix("grpc://") if protocol == "grpc" else url.rstrip("/")

    def labels(self, seeds: list[int]) -> list[int] | None:
        from ganrt.latents import labels_from_seeds

        return labels_from_seeds(seeds, self.spec["num_classes"]).tolist() if self.spec["num_classes"] else None

    def tensors(self, seeds: list[int]) -> list[tuple[str, str, np.ndarray]]:
        """(name, OIP datatype, array) of an OIP request for ``seeds``: z from the seeds, labels and truncation
        [B, 1] as the generator has them (the shapes Triton's clients send)."""
        from ganrt.latents import latents_from_seeds

        out = [("z", "FP32", latents_from_seeds(seeds, self.spec["latent_dim"]))]
        labels = self.labels(seeds)
        if labels is not None:
            out.append(("labels", "INT64", np.asarray(labels, np.int64).reshape(-1, 1)))
        if self.spec["has_truncation"]:
            out.append(("truncation", "FP32", np.ones((len(seeds), 1), np.float32)))
        return out

    def request(self, seeds: list[int]) -> tuple[str, bytes, dict[str, str]]:
        if self.protocol == "v1":
            return (f"{self.url}/v1/generate", json.dumps({"seeds": seeds, "format": "npy"}).encode(),
                    {"content-type": "application/json"})
        tensors = self.tensors(seeds)
        inputs = [{"name": name, "datatype": datatype, "shape": list(a.shape),
                   "parameters": {"binary_data_size": a.nbytes}} for name, datatype, a in tensors]
        head = json.dumps({"inputs": inputs, "outputs": [{"name": "images", "parameters": {"binary_data": True}}]
                          }).encode()
        return (f"{self.url}/v2/models/{self.model}/infer", head + b"".join(a.tobytes() for _, _, a in tensors),
                {"content-type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})

    def images(self, body: bytes, headers) -> np.ndarray:
        if self.protocol == "v1":
            return np.load(io.BytesIO(body), allow_pickle=False)
        n = int(headers.get("inference-header-content-length", len(body)))
        head = json.loads(body[:n])
        out = head["outputs"][0]
        if "data" in out:
            return np.asarray(out["data"], np.uint8).reshape(out["shape"])
        return np.frombuffer(body, np.uint8, offset=n).reshape(out["shape"])

    # -- one worker's connection ----------------------------------------------------------------------------
    def open(self):
        if self.protocol == "grpc":
            from tritonclient.grpc.aio import InferenceServerClient

            return InferenceServerClient(self.url)
        import httpx

        return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1))

    async def close(self, conn) -> None:
        await (conn.close() if self.protocol == "grpc" else conn.aclose())

    async def call(self, conn, seeds: list[int], decode: bool) -> np.ndarray | None:
        """The images of ``seeds`` (None unless ``decode``); Failed when the server answered an error."""
        if self.protocol == "grpc":
            from tritonclient.grpc import InferInput, InferRequestedOutput
            from tritonclient.utils import InferenceServerException

            inputs = []
            for name, datatype, a in self.tensors(seeds):
                inputs.append(InferInput(name, list(a.shape), datatype))
                inputs[-1].set_data_from_numpy(a)
            try:
                result = await conn.infer(self.model, inputs, outputs=[InferRequestedOutput("images")],
                                          client_timeout=60)
            except InferenceServerException as e:
                raise Failed(f"gRPC {str(e.status()).removeprefix('StatusCode.')}") from None
            return result.as_numpy("images") if decode else None
        import httpx

        url, body, headers = self.request(seeds)
        try:
            r = await conn.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise Failed(type(e).__name__) from None
        if r.status_code != 200:
            raise Failed(f"HTTP {r.status_code}")
        return self.images(r.content, r.headers) if decode else None


async def _discover(url: str, protocol: str, model: str | None, spec: dict[str, Any] | None,
                    default_model: str | None = None):
    """(spec, model name, server description): a ganrt server's /v1/model, else what the caller gave (the model
    named after the bundle by default), with the variant and batch of the model's Triton config when it has one
    (ganrt serve's gRPC ModelConfig, a ganrt Python-backend model on Triton)."""
    import httpx

    info = None
    if protocol != "grpc":
        async with httpx.AsyncClient(timeout=10) as client:
            try:
                r = await client.get(f"{url}/v1/model")
                if r.status_code == 200:
                    info = r.json()
            except httpx.HTTPError:
                info = None
    if spec is None:
        if info is None:
            raise ConfigError(f"{url} is not a ganrt server (no /v1/model): pass --bundle BUNDLE (or --check "
                              "BUNDLE) so the load tester knows the generator's inputs")
        spec = info["spec"]
    model = model or (info or {}).get("name") or (default_model if protocol != "v1" else None)
    if protocol in ("v2", "grpc") and not model:
        raise ConfigError(f"--protocol {protocol} needs the model's name: pass --model NAME")
    if info is None and protocol != "v1":
        info = _described(await _triton_config(url, protocol, model))
    return spec, model, info


async def _triton_config(url: str, protocol: str, model: str) -> dict[str, Any] | None:
    """The model's config from Triton's model-configuration extension (HTTP or gRPC), or None."""
    try:
        if protocol == "grpc":
            from tritonclient.grpc.aio import InferenceServerClient

            client = InferenceServerClient(url)
            try:
                return (await client.get_model_config(model, as_json=True, client_timeout=10))["config"]
            finally:
                await client.close()
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"{url}/v2/models/{model}/config")
            return r.json() if r.status_code == 200 else None
    except Exception:  # noqa: BLE001 - a server without the extension
        return None


def _described(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a load test needs of a Triton config: the ganrt variant it runs (None for auto) and its batch."""
    if not config:
        return None
    variant = ((config.get("parameters") or {}).get("variant") or {}).get("string_value")
    preferred = (config.get("dynamic_batching") or {}).get("preferred_batch_size") or []
    batch = int(preferred[0]) if preferred else int(config.get("max_batch_size") or 0) or None
    return {"variant": None if variant in (None, "", "auto") else variant, "batching": {"max_batch": batch},
            "triton_config": True}


async def _metrics(client, url: str) -> dict[str, float]:
    from ganrt.serve.metrics import batch_sizes

    try:
        r = await client.get(f"{url}/metrics")
        return batch_sizes(r.text) if r.status_code == 200 else {}
    except Exception:  # noqa: BLE001 - a server without ganrt's metrics
        return {}


async def run_level(client_spec: Client, concurrency: int, seeds_per_request: int, duration: float,
                    next_seed: list[int], keep: bool) -> Level:
    import httpx

    level = Level(concurrency)
    async with httpx.AsyncClient(timeout=60) as http:
        before = await _metrics(http, client_spec.url) if client_spec.protocol != "grpc" else {}
        # one client (one keep-alive connection, or one gRPC channel) per worker: a pool of 64 shared connections
        # spent more time in httpx's pool bookkeeping than the server spent answering (64 clients measured below
        # 8's rate). They are built before the window opens: building 64 took most of a 2 s window on a loaded
        # machine, and the late clients never sent a request.
        clients = [client_spec.open() for _ in range(concurrency)]
        deadline = time.perf_counter() + duration

        async def work(conn):
            while time.perf_counter() < deadline:
                first = next_seed[0]
                next_seed[0] += seeds_per_request
                seeds = list(range(first, first + seeds_per_request))
                t0 = time.perf_counter()
                try:
                    images = await client_spec.call(conn, seeds, keep)
                except Failed as e:
                    level.errors[str(e)] += 1
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                level.latencies_ms.append(ms)
                level.requests += 1
                level.images += seeds_per_request
                if time.perf_counter() <= deadline:
                    level.in_window += seeds_per_request
                    level.requests_in_window += 1
                if keep:
                    level.answers.append((first, seeds_per_request, hashlib.sha1(images.tobytes()).hexdigest()))

        try:
            await asyncio.gather(*(work(own) for own in clients))
        finally:
            await asyncio.gather(*(client_spec.close(own) for own in clients))
        level.seconds = duration
        after = await _metrics(http, client_spec.url) if client_spec.protocol != "grpc" else {}
        level.batches = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return level


def _offline(bundle: Path, variant: str | None, spec: dict[str, Any], max_batch: int, seconds: float = 2.0):
    """(generator, images/s of the same variant at max_batch through the seeds path)."""
    from ganrt.runtime import load

    gen = load(bundle, variant=variant) if variant else load(bundle)
    gen.warmup([max_batch])
    seeds = list(range(10**9, 10**9 + max_batch))
    labels = Client("", "v1", spec, None).labels(seeds)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3 * max_batch:
        gen.generate(seeds=seeds, labels=labels)
        n += max_batch
    return gen, n / (time.perf_counter() - t0)


def _check(gen, client: Client, levels: list[Level]) -> dict[str, int]:
    wrong = checked = 0
    for level in levels:
        for first, n, digest in level.answers:
            seeds = list(range(first, first + n))
            images = gen.generate(seeds=seeds, labels=client.labels(seeds))
            checked += 1
            wrong += hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest() != digest
    return {"checked": checked, "differ": wrong}


def loadtest(url: str, *, concurrency: list[int], seeds_per_request: int = 16, duration: float = 10.0,
             protocol: str = "v1", model: str | None = None, check: Path | None = None,
             bundle: Path | None = None, progress=lambda s: None) -> dict[str, Any]:
    """Run every level; the results dict (see ``write_report``). ``bundle``: where the generator's inputs come
    from for a server that does not describe them (Triton), without comparing pixels as ``check`` does."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    spec = default_model = None
    if check is not None or bundle is not None:
        from ganrt.bundle import Bundle

        spec = Bundle.open(check or bundle).spec.to_dict()
        default_model = Path(check or bundle).resolve().name  # what ganrt serve and ganrt triton call it
    url = Client.address(url, protocol)
    spec, model, info = asyncio.run(_discover(url, protocol, model, spec, default_model))
    client = Client(url, protocol, spec, model)
    offline = None
    gen = None
    if check is not None:
        max_batch = ((info or {}).get("batching") or {}).get("max_batch") or 64
        progress(f"offline: {(info or {}).get('variant') or 'auto'} at batch {max_batch}")
        gen, rate = _offline(check, (info or {}).get("variant"), spec, max_batch)
        offline = {"variant": gen.variant, "batch": max_batch, "images_per_s": rate}
    levels, next_seed = [], [0]
    for c in concurrency:
        progress(f"concurrency {c}: {duration:g} s")
        levels.append(asyncio.run(run_level(client, c, seeds_per_request, duration, next_seed, check is not None)))
    checked = _check(gen, client, levels) if gen is not None else None
    if gen is not None:
        gen.close()
    rows = [lv.summary() for lv in levels]
    if offline:
        for row in rows:
            row["served_vs_offline"] = row["images_per_s"] / offline["images_per_s"]
    return {"url": url, "protocol": protocol, "model": model, "server": info, "seeds_per_request": seeds_per_request,
            "duration_s": duration, "levels": rows, "offline": offline, "check": checked}


def write_report(out: Path, results: dict[str, Any]) -> list[Path]:
    """results.json, report.md and loadtest.png (img/s and p50/p99 latency against concurrency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ganrt.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    rows = results["levels"]
    cs = [r["concurrency"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(cs, [r["images_per_s"] for r in rows], "o-", label="served")
    if results.get("offline"):
        a.axhline(results["offline"]["images_per_s"], color="gray", ls="--",
                  label=f"offline, batch {results['offline']['batch']}")
    a.set(xscale="log", xlabel="concurrent clients", ylabel="images/s", title="throughput")
    a.legend()
    b.plot(cs, [r["p50_ms"] for r in rows], "o-", label="p50")
    b.plot(cs, [r["p99_ms"] for r in rows], "s-", label="p99")
    b.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)", title="latency")
    b.legend()
    fig.suptitle(f"{results['url']} ({results['protocol']}, {results['seeds_per_request']} seeds per request)")
    fig.tight_layout()
    fig.savefig(out / "loadtest.png", dpi=110)
    plt.close(fig)
    server = results.get("server") or {}
    lines = [f"# Load test of {results['url']}", "",
             f"Protocol {results['protocol']}, model `{results['model']}`, {results['seeds_per_request']} seeds per "
             f"request, {results['duration_s']:g} s per level."
             + (f" Server: `{server.get('variant')}` on {server.get('device')}, max batch "
                f"{(server.get('batching') or {}).get('max_batch')}, max delay "
                f"{(server.get('batching') or {}).get('max_delay_ms')} ms." if server.get("device") else "")
             + (f" Model config (Triton's): variant `{server.get('variant') or 'auto'}`, batch "
                f"{(server.get('batching') or {}).get('max_batch')}." if server.get("triton_config") else ""), "",
             "| clients | img/s | req/s | p50 ms | p90 ms | p99 ms | p99/p50 | errors | served/offline |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        ratio = f"{r['served_vs_offline']:.2f}" if "served_vs_offline" in r else "-"
        lines.append(f"| {r['concurrency']} | {r['images_per_s']:.0f} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} "
                     f"| {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['p99_ms'] / r['p50_ms']:.2f} | {errs} | {ratio} |")
    if results.get("offline"):
        o = results["offline"]
        lines += ["", f"Offline, the same run: `{o['variant']}` at batch {o['batch']}: {o['images_per_s']:.0f} img/s."]
    if results.get("check"):
        c = results["check"]
        lines += ["", f"Checked {c['checked']} answers against offline generation of the same seeds: "
                      f"{c['differ']} differ."]
    batches = [(r["concurrency"], r["batch_images"]) for r in rows if r["batch_images"]]
    if batches:
        lines += ["", "Formed batches (images per batch, cumulative counts from the server's /metrics):", ""]
        for c, hist in batches:
            lines.append(f"- {c} clients: " + ", ".join(f"<= {k}: {v:.0f}" for k, v in hist.items()))
    lines += ["", "![throughput and latency](loadtest.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return [out / "results.json", out / "report.md", out / "loadtest.png"]
