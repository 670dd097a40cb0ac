"""The model behind the routes: one Generator, its dynamic batcher, metrics and resolved options.

``Service.load()`` opens the bundle and the backend (synchronously: a bad bundle or option fails the command
before it binds a port); ``start()`` warms every batch bucket in a worker thread, then reports ready;
``stop()`` drains (every accepted request answered) and releases the backend. The ASGI app (``app.py``) drives
one through what the routes read (``loaded``, ``ready``, ``healthy``, ``spec``, ``variant``, ``platform``,
``options``, ``metrics``, ``executor``, ``submit``, ``describe``); each Ray replica (``ray_deployments.py``)
owns one without its batcher, since Ray Serve's ``@serve.batch`` forms the batches there.

Health: after ``unready_after`` consecutive failed batches the service is not ``healthy`` (the readiness
route answers 503, so a load balancer stops sending work), while requests are still taken; the readiness
route itself sends a one-image probe through the batcher (at most once a second) until a batch succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.runtime.tuning import measured_latencies
from ganrt.serve.batcher import Batcher, Work
from ganrt.serve.metrics import Metrics
from ganrt.serve.options import ServeOptions, resolve

log = logging.getLogger("ganrt.serve")


def generate_works(gen, works: list[Work]) -> np.ndarray:
    """The images of a formed batch, in order (a worker thread): latents from seeds, explicit latents, labels,
    truncation. Triton's Python backend (``triton_model``) runs its batches through this too."""
    from ganrt.latents import labels_from_seeds, latents_from_seeds

    spec = gen.spec
    # the batch's seeds in one call: from 32 seeds it takes the vectorized path (parts of a few seeds each
    # would each go seed by seed); so are the labels requests left to their seeds (never on the event loop)
    drawn = latents_from_seeds([s for w in works if w.z is None for s in w.seeds.tolist()], spec.latent_dim)
    if spec.conditional and any(w.labels is None for w in works):
        drawn_labels = iter(labels_from_seeds([s for w in works if w.labels is None for s in w.seeds.tolist()],
                                              spec.num_classes).tolist())
        works = [w if w.labels is not None else
                 Work(w.seeds, w.z, np.array([next(drawn_labels) for _ in range(w.n)], np.int64), w.truncation)
                 for w in works]
    rows, at = [], 0
    for w in works:
        if w.z is not None:
            rows.append(w.z)
        else:
            rows.append(drawn[at:at + w.n])
            at += w.n
    z = np.concatenate(rows)
    labels = np.concatenate([w.labels for w in works]) if spec.conditional else None
    truncation = np.concatenate([w.truncation for w in works]) if spec.has_truncation else None
    return gen.generate(z=z, labels=labels, truncation=truncation)


class Service:
    def __init__(self, bundle: str | os.PathLike, options: ServeOptions | None = None) -> None:
        self.bundle_path = Path(bundle)
        self.options = options or ServeOptions()
        self.gen = None
        self.bundle = None
        self.bundle_sha256 = ""
        self.metrics: Metrics | None = None
        self.batcher: Batcher | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.ready = False
        self.failure: str | None = None  # why the service could not become ready
        self.started_at = time.time()
        self.failed_batches = 0  # consecutive; 0 after a batch succeeds
        self._failures_lock = threading.Lock()
        self._probe: asyncio.Task | None = None
        self._probed_at = 0.0

    # -- life cycle ----------------------------------------------------------------------------------
    def load(self) -> None:
        """Open the bundle and load the backend; resolve the batching options (GanrtError on bad input)."""
        if self.gen is not None:
            return
        from ganrt.bundle import Bundle
        from ganrt.runtime import load

        o = self.options
        self.bundle = Bundle.open(self.bundle_path)
        self.bundle_sha256 = self.bundle.sha256()
        hint = o.max_batch or 64
        self.gen = load(self.bundle, backend=o.backend, variant=o.variant, precision=o.precision, threads=o.threads,
                        batch_size=min(hint, int(self.bundle.graph.get("max_batch") or hint)))
        self.options = resolve(o, bundle_name=self.bundle_path.resolve().name, variant=self.gen.variant,
                               gen_max_batch=self.gen.max_batch, device=self.gen.device,
                               median_ms_by_batch=measured_latencies(self.bundle, self.gen.variant, o.threads))
        self.metrics = Metrics(self.options.max_batch)
        self.executor = ThreadPoolExecutor(max_workers=self.options.inflight + 2, thread_name_prefix="ganrt-serve")

    async def start(self) -> None:
        """Load (if not yet), warm every batch bucket off the event loop, start the batcher, report ready."""
        loop = asyncio.get_running_loop()
        try:
            if self.gen is None:
                await loop.run_in_executor(None, self.load)
            o = self.options
            self.batcher = Batcher(self.run, max_batch=o.max_batch, max_delay_s=o.max_delay_ms / 1e3,
                                   max_queue=o.max_queue, max_queue_images=o.max_queue_images, inflight=o.inflight,
                                   executor=self.executor, stats=self.metrics.batcher_stats())
            if o.warmup:
                await loop.run_in_executor(self.executor, self.warm)
            self.batcher.start()
            self.ready = True
        except Exception as e:  # noqa: BLE001 - reported by /v2/health/ready and the log
            self.failure = f"{type(e).__name__}: {e}"
            log.error("the model could not be started: %s", self.failure)
            raise

    def warm(self) -> list[int]:
        """Compile every batch bucket up to max_batch (and batch 1 and max_batch); the sizes prepared."""
        t0 = time.perf_counter()
        sizes = self.gen.warmup(sorted({1, self.options.max_batch} | set(self._buckets())))
        log.info("warmed up batch sizes %s in %.1f s", sizes, time.perf_counter() - t0)
        return sizes

    def _buckets(self) -> list[int]:
        buckets = self.gen.batch_buckets or ()
        return [b for b in buckets if b <= self.options.max_batch]

    async def stop(self) -> None:
        """Drain: take no new requests, answer every accepted one, then release the backend."""
        self.ready = False
        if self._probe is not None:
            self._probe.cancel()
        if self.batcher is not None:
            await self.batcher.drain()
        if self.gen is not None:
            self.gen.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    # -- what the routes read ------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.gen is not None

    spec = property(lambda self: self.gen.spec)
    variant = property(lambda self: self.gen.variant)
    device = property(lambda self: self.gen.device)
    platform = property(lambda self: f"ganrt_{self.gen.backend}", doc="the platform OIP model metadata reports")

    @property
    def healthy(self) -> bool:
        """False after ``unready_after`` consecutive failed batches, until one succeeds."""
        return self.failed_batches < self.options.unready_after

    async def submit(self, work: Work, *, deadline: float | None = None) -> np.ndarray:
        """The images of ``work`` once its batch(es) ran (QueueFull, ShuttingDown, DeadlineExceeded at
        ``deadline``, event-loop time); cancelling the caller drops its queued work."""
        return await self.batcher.submit(work, deadline=deadline)

    def probe(self) -> None:
        """While unhealthy: one image through the batcher (at most once a second), so a recovered backend
        makes the service healthy again without waiting for traffic a load balancer no longer sends."""
        loop = asyncio.get_running_loop()
        if self.healthy or (self._probe is not None and not self._probe.done()) or loop.time() - self._probed_at < 1:
            return
        self._probed_at = loop.time()

        async def one() -> None:
            try:
                await self.submit(Work(seeds=np.zeros(1, np.uint64),
                                       labels=np.zeros(1, np.int64) if self.spec.conditional else None,
                                       truncation=np.ones(1, np.float32) if self.spec.has_truncation else None),
                                  deadline=loop.time() + 30)
            except Exception as e:  # noqa: BLE001 - counted by run(); the next readiness check probes again
                log.warning("readiness probe failed: %s", e)

        self._probe = loop.create_task(one())

    # -- work ----------------------------------------------------------------------------------------
    def run(self, works: list[Work]) -> np.ndarray:
        """One formed batch (worker thread), its success or failure counted for the readiness route."""
        try:
            images = generate_works(self.gen, works)
        except Exception:
            self._count_batch(failed=True)
            raise
        self._count_batch(failed=False)
        return images

    def _count_batch(self, *, failed: bool) -> None:
        with self._failures_lock:
            before = self.failed_batches
            self.failed_batches = before + 1 if failed else 0
            if self.metrics is not None:
                self.metrics.backend_failures.set(self.failed_batches)
        if failed and self.failed_batches == self.options.unready_after:
            log.error("%d consecutive batches failed: reporting not ready until one succeeds", self.failed_batches)
        elif not failed and before >= self.options.unready_after:
            log.warning("a batch succeeded after %d failures: ready again", before)

    def describe(self) -> dict[str, Any]:
        """What the page and /v1/model show."""
        s, o = self.gen.spec, self.options
        return {"name": o.model_name, "variant": self.gen.variant, "device": self.gen.device,
                "reason": self.gen.reason, "bundle_sha256": self.bundle_sha256,
                "spec": {"arch": s.arch, "latent_dim": s.latent_dim, "num_classes": s.num_classes,
                         "channels": s.channels, "height": s.height, "width": s.width,
                         "has_truncation": s.has_truncation},
                "batching": {"max_batch": o.max_batch, "max_delay_ms": o.max_delay_ms, "max_queue": o.max_queue,
                             "max_queue_images": o.max_queue_images, "request_timeout_s": o.request_timeout_s,
                             "inflight": o.inflight, "tuning": o.tuning},
                "max_seeds_per_request": o.max_seeds_per_request, "ready": self.ready}
