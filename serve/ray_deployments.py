"""The two Ray Serve deployments of a bundle (imported only with Ray installed; ``ganrt.serve.ray`` binds them).

- ``Model``: one replica = one ``Service`` (the bundle's Generator, its options resolved on the replica's own
  hardware, every batch bucket warmed before the replica reports healthy). Requests are merged by
  ``@serve.batch``, counted in images through ``batch_size_fn``; the generate call runs in the service's worker
  threads, never on the replica's event loop, and at most ``inflight`` batches compute at once (1 on a CPU,
  2 on a GPU, as ``ganrt serve``). Its batch size and delay are set after the options resolve.
- ``Ingress``: the same Starlette app as ``ganrt serve`` (``app.create_app``) around a ``RayFrontend``, which
  parses and answers requests in the ingress and sends their images to the model replicas through a
  deployment handle, split in parts of at most ``max_batch`` images. Generation is a pure function of its
  inputs, so a part whose replica died (killed, node lost) is sent again, to a live replica.

Ray's own pitfalls, handled here: ``max_ongoing_requests`` (default 5) would cap every batch at 5 requests, so
``ray.deployment_options`` sets it from the batch size; a blocking call in a batch handler would stall the
replica's event loop, so the model call runs in a thread; ``_local_testing_mode`` does not run
``@serve.batch``, so the tests use a real local cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.exceptions import BackPressureError

from ganrt.errors import BackendError
from ganrt.serve.batcher import DeadlineExceeded, QueueFull, ShuttingDown, Work
from ganrt.serve.metrics import Metrics
from ganrt.serve.options import DEFAULT_MAX_BATCH, DEFAULT_MAX_DELAY_MS, ServeOptions
from ganrt.serve.ray import MAX_INFLIGHT  # @serve.batch's max_concurrent_batches; a replica admits its `inflight`
from ganrt.serve.service import Service

log = logging.getLogger("ganrt.serve")
REPLICA_LOST = (ray.exceptions.RayActorError, serve.exceptions.ReplicaUnavailableError)


@dataclass
class Part:
    """Images of one request (at most max_batch) waiting in a replica's batch queue."""

    work: Work
    arrived: float  # perf_counter on the replica


def images_in(parts: list[Part]) -> int:
    """@serve.batch's batch_size_fn: batches are counted in images, not requests."""
    return sum(p.work.n for p in parts)


@serve.deployment(name="Model")
class Model:
    def __init__(self, bundle: str, options: ServeOptions) -> None:
        self.service = Service(bundle, options)
        self.service.load()  # options resolved on this replica's hardware (its benchmarks, its device)
        o = self.service.options
        if o.warmup:
            self.service.warm()  # Serve routes nothing here until __init__ returns: no request pays a compile
        self.generate_batch.set_max_batch_size(o.max_batch)
        self.generate_batch.set_batch_wait_timeout_s(o.max_delay_ms / 1e3)
        self._slots = asyncio.Semaphore(o.inflight)

    def describe(self) -> dict[str, Any]:
        return {**self.service.describe(), "backend": self.service.gen.backend, "ready": True}

    async def generate(self, work: Work) -> tuple[np.ndarray, list[dict[str, float]]]:
        """The images of ``work`` and, per batch part, what the ingress records in its metrics."""
        arrived = time.perf_counter()
        done = await asyncio.gather(*(self.generate_batch(Part(w, arrived))
                                      for w in work.split(self.service.options.max_batch)))
        images = [d[0] for d in done]
        return (images[0] if len(images) == 1 else np.concatenate(images)), [d[1] for d in done]

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_MAX_DELAY_MS / 1e3,
                 max_concurrent_batches=MAX_INFLIGHT, batch_size_fn=images_in)
    async def generate_batch(self, parts: list[Part]) -> list[tuple[np.ndarray, dict[str, float]]]:
        async with self._slots:
            started = time.perf_counter()
            images = await asyncio.get_running_loop().run_in_executor(
                self.service.executor, self.service.run, [p.work for p in parts])
            seconds = time.perf_counter() - started
        out, offset = [], 0
        for i, p in enumerate(parts):
            stats = {"queue_wait_s": started - p.arrived}
            if i == 0:  # the batch is counted once, with its first part
                stats.update(batch_images=float(images_in(parts)), compute_s=seconds)
            out.append((images[offset:offset + p.work.n], stats))
            offset += p.work.n
        return out

    def __del__(self) -> None:
        if getattr(self, "service", None) is not None and self.service.gen is not None:
            self.service.gen.close()
            self.service.executor.shutdown(wait=False)


class RayFrontend:
    """What the routes of ``app.create_app`` read (as ``Service`` has them), for a model behind a Ray handle."""

    def __init__(self, model, bundle: str, options: ServeOptions, scaling: dict[str, Any], retries: int = 2) -> None:
        from ganrt.bundle import Bundle

        self.model = model
        self.spec = Bundle.open(bundle, verify=False).spec  # the replicas verify the artifacts they load
        self.options = options.but(model_name=options.model_name or Path(bundle).resolve().name)
        self.scaling = scaling
        self.retries = retries
        self.info: dict[str, Any] | None = None  # a replica's description, once one answered
        self.metrics: Metrics | None = None
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ganrt-ingress")
        self.ready = False
        self.failure: str | None = None
        self._closing = False
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self.resent = 0  # parts sent again because their replica was lost

    loaded = property(lambda self: self.info is not None)
    variant = property(lambda self: self.info["variant"])
    device = property(lambda self: self.info["device"])
    platform = property(lambda self: f"ganrt_{self.info['backend']}")
    bundle_sha256 = property(lambda self: self.info["bundle_sha256"])

    async def start(self) -> None:
        """Ready once a model replica answered (Serve starts routing to one after its warm-up)."""
        self._idle = asyncio.Event()
        self._idle.set()
        try:
            info = await self.model.describe.remote()
            b = info["batching"]
            self.options = self.options.but(max_batch=b["max_batch"], max_delay_ms=b["max_delay_ms"],
                                            inflight=b["inflight"], tuning=b["tuning"])
            self.metrics = Metrics(self.options.max_batch)
            self.info = info
            self.ready = True
        except Exception as e:  # noqa: BLE001 - reported by /v2/health/ready and the log
            self.failure = f"{type(e).__name__}: {e}"
            log.error("no model replica answered: %s", self.failure)
            raise

    async def stop(self) -> None:
        """Take no new requests; return when every accepted one is answered."""
        self.ready = False
        self._closing = True
        if self._idle is not None:
            await self._idle.wait()
        self.executor.shutdown(wait=True)

    def describe(self) -> dict[str, Any]:
        return {**self.info, "ready": self.ready, "ray": {**self.scaling, "parts_resent": self.resent}}

    healthy = True  # each replica's health is Ray's to judge: it replaces one that fails its checks
    failed_batches = 0

    def probe(self) -> None:
        """Nothing to probe: see ``healthy``."""

    async def submit(self, work: Work, *, deadline: float | None = None) -> np.ndarray:
        """The images of ``work`` from the replicas; past ``deadline`` (event-loop time) DeadlineExceeded, and
        cancelling the caller cancels the parts in Ray (a part not yet in a batch is never computed)."""
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new requests; retry on another replica")
        self._inflight += 1
        self._idle.clear()
        self.metrics.queue_depth.set(self._inflight)
        loop = asyncio.get_running_loop()
        try:
            parts = asyncio.gather(*(self._generate(w) for w in work.split(self.options.max_batch)))
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done = await asyncio.wait_for(parts, timeout)
        except asyncio.TimeoutError:
            self.metrics.dropped.labels("expired").inc(work.n)
            raise DeadlineExceeded("the request's deadline passed before the replicas answered") from None
        except asyncio.CancelledError:
            self.metrics.dropped.labels("cancelled").inc(work.n)
            raise
        finally:
            self._inflight -= 1
            self.metrics.queue_depth.set(self._inflight)
            if self._inflight == 0:
                self._idle.set()
        m = self.metrics
        for _, parts in done:
            for stats in parts:
                m.queue_wait.observe(stats["queue_wait_s"])
                if "batch_images" in stats:
                    m.batch_images.observe(stats["batch_images"])
                    m.compute.observe(stats["compute_s"])
        images = [d[0] for d in done]
        return images[0] if len(images) == 1 else np.concatenate(images)

    async def _generate(self, work: Work):
        for attempt in range(self.retries + 1):
            try:
                return await self.model.generate.remote(work)
            except BackPressureError as e:
                raise QueueFull(f"the model replicas are at capacity ({e}); retry shortly") from None
            except REPLICA_LOST as e:
                if attempt == self.retries:
                    raise BackendError(f"the model replica was lost at each of {attempt + 1} attempts "
                                       f"({type(e).__name__}); retry shortly") from None
                self.resent += 1
                log.warning("a model replica was lost (%s); sending the part again", type(e).__name__)
            except ray.exceptions.RayTaskError as e:  # the replica's own exception, without Ray's wrapper
                raise (e.cause if isinstance(e.cause, Exception) else e) from None
        raise AssertionError("unreachable")


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, model, bundle: str, options: ServeOptions, scaling: dict[str, Any]) -> None:
        self.frontend = RayFrontend(model, bundle, options, scaling)

    def __serve_build_asgi_app__(self):
        from ganrt.serve.app import create_app

        return create_app(self.frontend)
