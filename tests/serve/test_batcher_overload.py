"""The batcher under overload: the queue bounded in images, a cancelled or expired request leaving the queue
before its images are computed (and counted by reason), work computed for a request that had gone counted as
wasted."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ganrt.serve.batcher import Batcher, DeadlineExceeded, QueueFull, Stats, Work


def gated_run(seen: list, gate: threading.Event):
    """Images whose pixel is the seed; blocks on ``gate``; records every seed it computed."""
    def run(works):
        gate.wait(10)
        seeds = np.concatenate([w.seeds for w in works])
        seen.extend(int(s) for s in seeds)
        return (seeds % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
    return run


def work(first, n):
    return Work(seeds=np.arange(first, first + n, dtype=np.uint64))


def counting_stats():
    dropped, wasted = Counter(), []
    return Stats(on_dropped=lambda reason, n: dropped.update({reason: n}),
                 on_wasted=lambda reason, n: wasted.append((reason, n))), dropped, wasted


def make(run, stats, **kw):
    opts = dict(max_batch=4, max_delay_s=0.0, max_queue=100, inflight=1, executor=ThreadPoolExecutor(2))
    opts.update(kw)
    return Batcher(run, stats=stats, **opts)


def test_the_queue_is_bounded_in_images_not_only_requests():
    seen, gate = [], threading.Event()
    stats, dropped, _ = counting_stats()

    async def main():
        b = make(gated_run(seen, gate), stats, max_queue_images=10)
        b.start()
        computing = asyncio.ensure_future(b.submit(work(0, 4)))  # taken at once into the computing batch
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(b.submit(work(100, 8)))  # 8 images wait
        await asyncio.sleep(0.01)
        assert b.images_waiting == 8
        with pytest.raises(QueueFull, match="8 images waiting, --max-queue-images 10"):
            await b.submit(work(200, 3))
        small = asyncio.ensure_future(b.submit(work(300, 2)))  # 10 fits
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(computing, queued, small)
        await b.drain()

    asyncio.run(main())
    assert dropped == {"rejected": 3} and 200 not in seen and 300 in seen


def test_an_empty_queue_admits_a_request_larger_than_the_image_bound():
    seen, gate = [], threading.Event()
    gate.set()

    async def main():
        b = make(gated_run(seen, gate), Stats(), max_queue_images=2)
        b.start()
        images = await b.submit(work(0, 9))
        await b.drain()
        return images

    assert asyncio.run(main()).reshape(-1).tolist() == list(range(9))


def test_a_cancelled_request_leaves_the_queue_and_is_never_computed():
    seen, gate = [], threading.Event()
    stats, dropped, wasted = counting_stats()

    async def main():
        b = make(gated_run(seen, gate), stats)
        b.start()
        computing = asyncio.ensure_future(b.submit(work(0, 4)))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(b.submit(work(100, 12)))  # three parts, all queued
        stays = asyncio.ensure_future(b.submit(work(200, 2)))
        await asyncio.sleep(0.01)
        assert b.images_waiting == 14 and b.waiting == 2
        gone.cancel()  # its HTTP client disconnected
        await asyncio.sleep(0.01)
        assert b.images_waiting == 2 and b.waiting == 1
        gate.set()
        got = await asyncio.gather(computing, stays)
        await b.drain()
        return got

    computing, stays = asyncio.run(main())
    assert not any(100 <= s < 112 for s in seen), "a cancelled request's images were computed"
    assert stays.reshape(-1).tolist() == [200, 201] and dropped == {"cancelled": 12} and wasted == []


def test_a_request_past_its_deadline_gets_deadline_exceeded_and_its_images_are_never_computed():
    seen, gate = [], threading.Event()
    stats, dropped, _ = counting_stats()

    async def main():
        b = make(gated_run(seen, gate), stats)
        b.start()
        loop = asyncio.get_running_loop()
        computing = asyncio.ensure_future(b.submit(work(0, 4)))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded, match="6 of its 6 images not computed"):
            await b.submit(work(100, 6), deadline=loop.time() + 0.1)
        gate.set()
        await computing
        with pytest.raises(DeadlineExceeded):
            await b.submit(work(300, 1), deadline=loop.time() - 1)
        await b.drain()

    asyncio.run(main())
    assert not any(100 <= s < 106 for s in seen) and dropped == {"expired": 7}


def test_images_computed_for_a_request_that_went_away_are_counted_as_wasted():
    seen, gate = [], threading.Event()
    stats, dropped, wasted = counting_stats()

    async def main():
        b = make(gated_run(seen, gate), stats)
        b.start()
        gone = asyncio.ensure_future(b.submit(work(0, 3)))
        await asyncio.sleep(0.05)  # its batch is computing
        gone.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await b.drain()

    asyncio.run(main())
    assert seen == [0, 1, 2] and wasted == [("cancelled", 3)] and dropped == {}


def test_a_part_that_cannot_finish_before_its_deadline_is_refused_uncomputed_when_its_batch_would_start():
    import time

    seen = []
    stats, dropped, _ = counting_stats()

    def slow_run(works):
        time.sleep(0.2)  # every batch takes 0.2 s: the batcher learns it from the first
        seeds = np.concatenate([w.seeds for w in works])
        seen.extend(int(s) for s in seeds)
        return (seeds % 256).astype(np.uint8).reshape(-1, 1, 1, 1)

    async def main():
        b = make(slow_run, stats)
        b.start()
        loop = asyncio.get_running_loop()
        await b.submit(work(0, 1))  # teaches the batcher a batch's time
        busy = asyncio.ensure_future(b.submit(work(10, 4)))
        await asyncio.sleep(0.01)
        # queued behind a 0.2 s batch with 0.3 s to go: at its turn 0.1 s are left, less than a batch takes
        with pytest.raises(DeadlineExceeded, match="could not finish before its deadline"):
            await b.submit(work(100, 2), deadline=loop.time() + 0.3)
        await busy
        ok = await b.submit(work(200, 1), deadline=loop.time() + 5)  # time enough: computed
        await b.drain()
        return ok

    assert asyncio.run(main()).reshape(-1).tolist() == [200]
    assert 100 not in seen and dropped == {"expired": 2}


@pytest.mark.parametrize("gone", ["deadline", "cancel"])
def test_the_batcher_survives_requests_leaving_while_it_forms_a_batch(gone):
    """A request leaving (deadline or cancel) while the batcher takes its parts must not leave the batcher with a
    queued part whose request is gone: the batcher once died on one (InvalidStateError) and served nothing more."""
    import time

    def run(works):
        time.sleep(0.002)
        seeds = np.concatenate([w.seeds for w in works])
        return (seeds % 256).astype(np.uint8).reshape(-1, 1, 1, 1)

    async def main():
        b = make(run, Stats(), max_batch=16, max_delay_s=0.002, max_queue_images=4096)
        b.start()
        loop = asyncio.get_running_loop()
        for i in range(30):
            big = work(10_000 * (i + 1), 1024)
            if gone == "deadline":
                with pytest.raises(DeadlineExceeded):
                    await b.submit(big, deadline=loop.time() + 0.005)
            else:
                task = asyncio.ensure_future(b.submit(big))
                await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            small = await asyncio.wait_for(b.submit(work(i, 2)), 5)  # the batcher still serves
            assert small.reshape(-1).tolist() == [i, i + 1]
        await b.drain()

    asyncio.run(main())


def test_a_congested_queue_answers_the_newest_first_and_an_aged_request_before_its_deadline(monkeypatch):
    """Adaptive LIFO: once the oldest part has waited past the congestion threshold the newest go first; a part
    that has used half its deadline's time goes first again. (The threshold counts in batches' time; the gated
    batches here take as long as the test waits, so the test sets it to its 10 ms floor.)"""
    import time

    from ganrt.serve import batcher as batcher_module

    monkeypatch.setattr(batcher_module, "LIFO_AFTER", 0)
    seen, gate = [], threading.Event()

    async def main():
        b = make(gated_run(seen, gate), Stats(), max_batch=1)
        b.start()
        loop = asyncio.get_running_loop()
        busy = asyncio.ensure_future(b.submit(work(0, 1)))
        await asyncio.sleep(0.05)
        patient = asyncio.ensure_future(b.submit(work(100, 1), deadline=loop.time() + 0.4))
        others = [asyncio.ensure_future(b.submit(work(200 + i, 1))) for i in range(3)]
        await asyncio.sleep(0.05)  # > the congestion threshold (10 ms floor): newest first
        gate.set()
        await asyncio.gather(busy, *others, patient)
        first_order = list(seen)
        seen.clear()
        gate.clear()
        busy = asyncio.ensure_future(b.submit(work(0, 1)))
        await asyncio.sleep(0.05)
        aged = asyncio.ensure_future(b.submit(work(300, 1), deadline=loop.time() + 0.2))
        later = [asyncio.ensure_future(b.submit(work(400 + i, 1))) for i in range(3)]
        time.sleep(0.12)  # the aged part has used more than half of its 0.2 s
        gate.set()
        await asyncio.gather(busy, aged, *later)
        await b.drain()
        return first_order, list(seen)

    first_order, second_order = asyncio.run(main())
    assert first_order == [0, 202, 201, 200, 100]  # the newest first while congested
    assert second_order[:2] == [0, 300]  # the aged part before the newer ones
