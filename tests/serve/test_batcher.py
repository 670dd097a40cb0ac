"""The dynamic batcher: requests merged into batches counted in images, large ones split, a bounded queue,
a failing batch failing only its own requests, and a drain that answers everything it accepted."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ganrt.serve.batcher import Batcher, QueueFull, ShuttingDown, Stats, Work


def fake_run(calls, delay=0.0, fail_on=None):
    """Images whose single pixel is the seed (mod 256); records the batch sizes it saw."""
    def run(works):
        n = sum(w.n for w in works)
        calls.append(n)
        if fail_on is not None and fail_on(works):
            raise RuntimeError("backend exploded")
        time.sleep(delay)
        seeds = np.concatenate([w.seeds for w in works])
        return (seeds % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
    return run


def work(first, n):
    return Work(seeds=np.arange(first, first + n, dtype=np.uint64))


def batcher(run, **kw):
    opts = dict(max_batch=8, max_delay_s=0.05, max_queue=100, inflight=1, executor=ThreadPoolExecutor(2))
    opts.update(kw)
    return Batcher(run, **opts)


def test_concurrent_requests_are_merged_into_batches_counted_in_images():
    calls, sizes = [], []

    async def main():
        b = batcher(fake_run(calls, delay=0.05), stats=Stats(on_batch=sizes.append))
        b.start()
        results = await asyncio.gather(*(b.submit(work(10 * i, 2)) for i in range(8)))  # 16 images
        await b.drain()
        return results

    results = asyncio.run(main())
    for i, images in enumerate(results):
        assert images.reshape(-1).tolist() == [10 * i, 10 * i + 1]  # every request gets its own images
    assert sum(calls) == 16 and max(calls) <= 8 and len(calls) <= 3  # merged, never past max_batch
    assert sizes == calls


def test_a_request_larger_than_max_batch_is_split_and_stitched():
    calls = []

    async def main():
        b = batcher(fake_run(calls))
        b.start()
        images = await b.submit(work(0, 20))
        await b.drain()
        return images

    images = asyncio.run(main())
    assert images.reshape(-1).tolist() == list(range(20)) and calls == [8, 8, 4]


def test_a_lone_request_waits_at_most_max_delay():
    calls = []

    async def main():
        b = batcher(fake_run(calls), max_delay_s=0.02)
        b.start()
        t0 = time.perf_counter()
        await b.submit(work(0, 1))
        elapsed = time.perf_counter() - t0
        await b.drain()
        return elapsed

    assert asyncio.run(main()) < 1.0 and calls == [1]


def test_a_full_queue_refuses_at_once():
    gate = threading.Event()

    def run(works):
        gate.wait(5)
        return np.zeros((sum(w.n for w in works), 1, 1, 1), np.uint8)

    async def main():
        b = batcher(run, max_queue=2, max_batch=1)
        b.start()
        first = asyncio.ensure_future(b.submit(work(0, 1)))  # taken into the computing batch
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit(work(i, 1))) for i in (1, 2)]
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        with pytest.raises(QueueFull, match="2 requests waiting"):
            await b.submit(work(3, 1))
        refused_in = time.perf_counter() - t0
        gate.set()
        await asyncio.gather(first, *queued)
        await b.drain()
        return refused_in

    assert asyncio.run(main()) < 0.05


def test_a_failing_batch_fails_only_its_requests_and_the_batcher_goes_on():
    calls = []

    async def main():
        b = batcher(fake_run(calls, fail_on=lambda works: any(int(w.seeds[0]) == 666 for w in works)),
                    max_delay_s=0.0)
        b.start()
        with pytest.raises(RuntimeError, match="backend exploded"):
            await b.submit(work(666, 1))
        images = await b.submit(work(5, 2))
        await b.drain()
        return images

    assert asyncio.run(main()).reshape(-1).tolist() == [5, 6]


def test_drain_answers_every_accepted_request_then_refuses_new_ones():
    calls = []

    async def main():
        b = batcher(fake_run(calls, delay=0.02), max_batch=2)
        b.start()
        pending = [asyncio.ensure_future(b.submit(work(i * 3, 3))) for i in range(6)]
        await asyncio.sleep(0)
        await b.drain()
        assert all(p.done() and not p.exception() for p in pending)
        with pytest.raises(ShuttingDown):
            await b.submit(work(0, 1))
        return [p.result().reshape(-1).tolist() for p in pending]

    results = asyncio.run(main())
    assert results == [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(6)] and sum(calls) == 18
