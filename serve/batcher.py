"""The dynamic batcher: concurrent requests merged into one ``generate`` call, counted in images.

A request of n images is split into parts of at most ``max_batch`` images. Parts wait in one FIFO; a batch
takes parts until it holds ``max_batch`` images or ``max_delay`` has passed since its first part arrived
(a part that would overflow the batch starts the next one). At most ``inflight`` batches compute at once,
each in a worker thread (the Generator is thread-safe), so the event loop never blocks; while they compute,
the queue fills and the next batch forms full.

Overload degrades gracefully instead of letting latency grow:
- At most ``max_queue`` requests and ``max_queue_images`` images wait: beyond either, ``submit`` raises
  ``QueueFull`` at once (the server answers 503 with Retry-After). A request is admitted into an empty queue
  whatever its size, so no request is refused for ever.
- A request whose waiter is cancelled (its HTTP client went away) leaves the queue at once: parts not yet in a
  batch are never computed. A request past its ``deadline`` leaves the queue the same way and its waiter gets
  ``DeadlineExceeded`` (504); so does one whose deadline is nearer than a batch's usual compute time when its
  batch would start (it could not be answered in time). Parts already computing finish; their images are
  counted as wasted.
- A congested queue (its oldest part waited longer than a few batches' time) serves the newest parts first,
  so in an overload fresh requests are answered while their clients still wait rather than every request
  aging toward its client's patience; a part that has waited a while longer (see ``Batcher._end``) goes first
  again, so a sustained overload is served in order.
``drain()`` refuses new requests and returns when every accepted one is answered.

The queue is a deque and an ``asyncio.Event`` (no ``wait_for`` around ``Queue.get``, which can lose an item
when the timeout and the item race on Python < 3.12).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from ganrt.errors import GanrtError

LIFO_AFTER = 4  # batches' time the oldest part may wait before the newest are taken first (see Batcher._end)
LIFO_FLOOR_S = 0.01  # ... and at least this long
AGING_FACTOR = 2  # a part that waited this many congestion thresholds goes first again (see Batcher._end) ...
AGING_FLOOR_S = 0.5  # ... or at least this long ...
AGING_SHARE = 0.5  # ... but at most this share of its deadline's time


class QueueFull(GanrtError):
    """Too many requests are waiting: the server answers 503 and the client retries later."""


class ShuttingDown(GanrtError):
    """The server is draining: it answers what it accepted and takes nothing new."""


class DeadlineExceeded(GanrtError):
    """A request's deadline passed before its images were ready: its queued work was dropped (504)."""


@dataclass
class Work:
    """One request's images: latents from ``seeds`` (uint64) or explicit ``z``; labels/truncation per image."""

    seeds: np.ndarray | None = None  # (n,) uint64
    z: np.ndarray | None = None  # (n, latent_dim) float32
    labels: np.ndarray | None = None  # (n,) int64; None on a conditional generator: the seeds' documented labels
    truncation: np.ndarray | None = None  # (n,) float32, families with truncation only

    @property
    def n(self) -> int:
        return len(self.seeds) if self.seeds is not None else len(self.z)

    def with_labels(self, num_classes: int) -> "Work":
        """This work with its labels: the given ones, else the seeds' documented labels (drawn here)."""
        if self.labels is not None or not num_classes:
            return self
        from ganrt.latents import labels_from_seeds

        return Work(self.seeds, self.z, labels_from_seeds(self.seeds.tolist(), num_classes), self.truncation)

    def slice(self, lo: int, hi: int) -> "Work":
        def cut(a):
            return None if a is None else a[lo:hi]

        return Work(cut(self.seeds), cut(self.z), cut(self.labels), cut(self.truncation))

    def split(self, max_batch: int) -> list["Work"]:
        """Consecutive parts of at most ``max_batch`` images (a batch never holds more)."""
        return [self.slice(lo, min(lo + max_batch, self.n)) for lo in range(0, self.n, max_batch)]


@dataclass(eq=False)
class _Part:
    work: Work
    future: asyncio.Future
    enqueued: float
    ticket: "_Ticket"
    deadline: float | None = None  # event-loop time by which its request wants its images
    taken: bool = False  # in a formed batch (computing or computed)
    gone: str | None = None  # why its request went away (cancelled, expired, failed), if it did


@dataclass
class _Ticket:
    """A request's count of parts still queued: it stops counting against max_queue when none are."""

    queued: int


@dataclass
class Stats:
    """What the batcher saw (the metrics module reads these callbacks)."""

    on_batch: Callable[[int], None] = lambda n: None  # images in a formed batch
    on_queue_wait: Callable[[float], None] = lambda s: None  # seconds a part waited for its batch
    on_compute: Callable[[float], None] = lambda s: None  # seconds a batch computed
    on_depth: Callable[[int], None] = lambda d: None  # requests waiting
    on_images_waiting: Callable[[int], None] = lambda n: None  # images waiting
    on_dropped: Callable[[str, int], None] = lambda reason, n: None  # images never computed: reason, count
    on_wasted: Callable[[str, int], None] = lambda reason, n: None  # images computed for a request that had gone


class Batcher:
    def __init__(self, run: Callable[[list[Work]], np.ndarray], *, max_batch: int, max_delay_s: float,
                 max_queue: int, inflight: int, executor: Executor, stats: Stats | None = None,
                 max_queue_images: int | None = None) -> None:
        """``run(works)`` draws the images of the works, concatenated, in a worker thread."""
        self._run = run
        self.max_batch = int(max_batch)
        self.max_delay_s = float(max_delay_s)
        self.max_queue = int(max_queue)
        self.max_queue_images = int(max_queue_images) if max_queue_images else None
        self._executor = executor
        self._stats = stats or Stats()
        self._parts: collections.deque[_Part] = collections.deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(int(inflight))
        self._computing: set[asyncio.Task] = set()
        self._compute_s = 0.0  # a batch's compute time, a moving average: what a part needs before its deadline
        self._waiting = 0  # requests with parts still queued
        self._images = 0  # images in queued parts
        self._closing = False
        self._task: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def images_waiting(self) -> int:
        return self._images

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="ganrt-batcher")

    def _admit(self, work: Work) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down and takes no new requests; retry on another replica")
        full = None
        if self._waiting >= self.max_queue:
            full = f"{self._waiting} requests waiting, --max-queue {self.max_queue}"
        elif self.max_queue_images and self._images and self._images + work.n > self.max_queue_images:
            full = f"{self._images} images waiting, --max-queue-images {self.max_queue_images}"
        if full:
            self._stats.on_dropped("rejected", work.n)
            raise QueueFull(f"the server is at capacity ({full}); retry shortly")

    async def submit(self, work: Work, *, deadline: float | None = None) -> np.ndarray:
        """The images of ``work``, uint8 (n, H, W, C), once its batch(es) ran.

        ``deadline`` (event-loop time): past it, the work still queued is dropped and ``DeadlineExceeded``
        raised. Cancelling the caller drops it the same way. QueueFull / ShuttingDown at once when refused."""
        self._admit(work)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline is not None and deadline <= now:
            self._stats.on_dropped("expired", work.n)
            raise DeadlineExceeded("the request's deadline had passed before it was queued")
        pieces = work.split(self.max_batch)
        ticket = _Ticket(queued=len(pieces))
        parts = [_Part(piece, loop.create_future(), now, ticket, deadline) for piece in pieces]
        self._waiting += 1
        self._images += work.n
        self._report_depth()
        self._parts.extend(parts)
        self._arrived.set()
        # asyncio.wait, not gather or wait_for: it cancels nothing itself, so a part's future is cancelled only
        # by _withdraw, in the same step that takes the part out of the queue (the batcher never meets a
        # queued part whose request has gone)
        futures = [p.future for p in parts]
        try:
            _, pending = await asyncio.wait(futures, timeout=None if deadline is None else deadline - now,
                                            return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            self._withdraw(parts, "cancelled")
            raise
        failed = next((f.exception() for f in futures if f.done() and f.exception() is not None), None)
        if failed is not None:  # a part failed (its batch, or it could not finish in time): drop the others
            self._withdraw(parts, "expired" if isinstance(failed, DeadlineExceeded) else "failed")
            raise failed
        if pending:
            dropped = self._withdraw(parts, "expired")
            raise DeadlineExceeded(f"the request's deadline passed after {loop.time() - now:.3f} s in the server "
                                   f"({dropped} of its {work.n} images not computed)")
        results = [f.result() for f in futures]
        return results[0] if len(results) == 1 else np.concatenate(results, axis=0)

    def _withdraw(self, parts: list[_Part], reason: str) -> int:
        """Take a gone request's queued parts out of the queue (never computed); the images dropped."""
        dropped = 0
        for part in parts:
            part.future.cancel()
            part.gone = reason
            if not part.taken:
                self._parts.remove(part)
                part.taken = True
                dropped += part.work.n
                self._taken(part)
        if dropped:
            self._stats.on_dropped(reason, dropped)
        return dropped

    def _report_depth(self) -> None:
        self._stats.on_depth(self._waiting)
        self._stats.on_images_waiting(self._images)

    async def drain(self) -> None:
        """Take no new requests; return when every accepted one is answered."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        if self._computing:
            await asyncio.gather(*self._computing, return_exceptions=True)

    # -- the loop -----------------------------------------------------------------------------------
    async def _wait_for_part(self, deadline: float | None) -> bool:
        """True once a part is queued; False when ``deadline`` (loop time) passes first, or when draining and
        nothing is left."""
        loop = asyncio.get_running_loop()
        while not self._startable_head(loop.time()):
            if self._closing:
                return False
            self._arrived.clear()
            if deadline is None:
                await self._arrived.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
                return False
        return True

    @property
    def _end(self) -> int:
        """Which end of the queue the next part comes from. First come, first served (0), except in a congested
        queue (its oldest part has waited longer than LIFO_AFTER batches' time): then the newest (-1), so the
        freshest requests are answered while their clients still wait instead of every request aging toward
        its client's patience (adaptive LIFO). A part that has waited AGING_FACTOR times that long (at least
        AGING_FLOOR_S, at most AGING_SHARE of its deadline's time) goes first again: under a sustained overload
        the queue is served in order again, and no patient client waits much longer than the queue is deep."""
        if not self._parts:
            return 0
        congested = max(LIFO_AFTER * self._compute_s, 2 * self.max_delay_s, LIFO_FLOOR_S)
        oldest = self._parts[0]
        waited = asyncio.get_running_loop().time() - oldest.enqueued
        aged = max(AGING_FLOOR_S, AGING_FACTOR * congested)
        if oldest.deadline is not None:
            aged = min(aged, AGING_SHARE * (oldest.deadline - oldest.enqueued))
        return -1 if congested < waited <= aged else 0

    def _pop(self) -> _Part:
        part = self._parts.pop() if self._end == -1 else self._parts.popleft()
        self._taken(part)
        return part

    def _startable_head(self, now: float) -> bool:
        """Whether a part is queued, after failing the parts at the end the next is taken from that could not
        finish before their deadline anyway (a batch's usual compute time): their requests get DeadlineExceeded
        at once, uncomputed."""
        while self._parts and (p := self._parts[self._end]).deadline is not None and p.deadline - now < self._compute_s:
            part = self._pop()
            part.gone = "expired"
            self._stats.on_dropped("expired", part.work.n)
            part.future.set_exception(DeadlineExceeded(
                f"the request could not finish before its deadline (a batch takes about {self._compute_s:.3f} s)"))
        return bool(self._parts)

    def _taken(self, part: _Part) -> None:
        part.taken = True
        self._images -= part.work.n
        part.ticket.queued -= 1
        if part.ticket.queued == 0:
            self._waiting -= 1
        self._report_depth()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # form the next batch only when it can start: it forms fuller
            if not await self._wait_for_part(None):  # draining and nothing left
                self._slots.release()
                return
            first = self._pop()
            batch, n = [first], first.work.n
            deadline = first.enqueued + self.max_delay_s
            while n < self.max_batch and await self._wait_for_part(deadline):
                if n + self._parts[self._end].work.n > self.max_batch:
                    break  # the next part starts the next batch
                part = self._pop()
                batch.append(part)
                n += part.work.n
            started = loop.time()
            for part in batch:
                self._stats.on_queue_wait(started - part.enqueued)
            self._stats.on_batch(n)
            task = loop.create_task(self._compute(batch))
            self._computing.add(task)
            task.add_done_callback(self._computing.discard)

    async def _compute(self, batch: list[_Part]) -> None:
        loop = asyncio.get_running_loop()
        try:
            t0 = time.perf_counter()
            images = await loop.run_in_executor(self._executor, self._run, [p.work for p in batch])
            seconds = time.perf_counter() - t0
            self._compute_s = seconds if self._compute_s == 0 else 0.8 * self._compute_s + 0.2 * seconds
            self._stats.on_compute(seconds)
            offset, wasted = 0, collections.Counter()
            for part in batch:
                if part.future.done():  # its request went away (client gone, deadline) while this batch ran
                    wasted[part.gone or "cancelled"] += part.work.n
                else:
                    part.future.set_result(images[offset:offset + part.work.n])
                offset += part.work.n
            for reason, n in wasted.items():
                self._stats.on_wasted(reason, n)
        except BaseException as e:  # the batch's requests fail with it; the server stays up
            for part in batch:
                if not part.future.done():
                    part.future.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            if not isinstance(e, Exception):
                raise
        finally:
            self._slots.release()
