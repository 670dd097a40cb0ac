"""The pool logic every pooled backend (OpenVINO requests, TensorRT contexts, CUDA graphs) relies on."""

from __future__ import annotations

import threading
import time

import pytest

from ganrt.runtime.pool import ShapeCache, SlotPool, batch_buckets, bucket_for


def test_buckets_are_powers_of_two_up_to_max_batch_plus_the_exact_sizes():
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert batch_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert batch_buckets(64, exact=(1, 2, 3)) == (1, 2, 3, 4, 8, 16, 32, 64)
    assert batch_buckets(1) == (1,)
    assert [bucket_for(b, batch_buckets(24)) for b in (1, 3, 5, 17, 24)] == [1, 4, 8, 24, 24]
    with pytest.raises(ValueError, match="larger than the largest bucket"):
        bucket_for(25, batch_buckets(24))


def test_a_slot_is_lent_to_one_caller_at_a_time_and_at_most_size_are_made():
    made, busy, overlaps = [], set(), []
    pool = SlotPool(lambda: made.append(object()) or made[-1], size=3)
    lock = threading.Lock()

    def work():
        for _ in range(30):
            with pool.slot() as s:
                with lock:
                    if id(s) in busy:
                        overlaps.append(s)
                    busy.add(id(s))
                time.sleep(0.0005)
                with lock:
                    busy.discard(id(s))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and len(made) == 3 and pool.created == 3


def test_all_holds_every_slot_so_warm_up_prepares_each_one():
    pool = SlotPool(lambda: [], size=4)
    with pool.all() as slots:
        assert len(slots) == 4 and len({id(s) for s in slots}) == 4
        for s in slots:
            s.append("warm")
    seen = []
    for _ in range(4):  # every slot a caller can get afterwards is a warmed one
        with pool.slot() as s:
            seen.append(s)
    assert all(s == ["warm"] for s in seen)


def test_a_failed_make_does_not_use_up_a_slot():
    calls = []

    def make():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device busy")
        return "slot"

    pool = SlotPool(make, size=1)
    with pytest.raises(RuntimeError, match="device busy"):
        with pool.slot():
            pass
    with pool.slot() as s:
        assert s == "slot"


def test_a_caller_waiting_for_a_slot_makes_it_when_the_maker_failed():
    """The last slot's make fails while another caller waits: that caller makes the slot, it does not hang."""
    started, release = threading.Event(), threading.Event()
    calls = []

    def make():
        calls.append(1)
        if len(calls) == 1:
            started.set()
            release.wait(10)
            raise RuntimeError("out of device memory")
        return "slot"

    pool = SlotPool(make, size=1)
    failed, got = [], []

    def first():
        try:
            with pool.slot():
                pass
        except RuntimeError as e:
            failed.append(str(e))

    def second():
        with pool.slot() as s:
            got.append(s)

    a = threading.Thread(target=first, daemon=True)  # daemon: a regression fails the test, not the run
    a.start()
    assert started.wait(10)
    b = threading.Thread(target=second, daemon=True)
    b.start()
    time.sleep(0.05)  # b now waits: the only slot is being made
    release.set()
    a.join(10)
    b.join(10)
    assert not b.is_alive(), "the waiting caller hung after the maker failed"
    assert failed == ["out of device memory"] and got == ["slot"] and pool.created == 1


def test_all_without_make_takes_only_the_slots_made_and_waits_for_lent_ones():
    made = []
    pool = SlotPool(lambda: made.append(object()) or made[-1], size=4)
    with pool.all(make=False) as slots:  # closing an unused pool makes nothing
        assert slots == []
    taken = []
    with pool.slot() as lent:
        def close():
            with pool.all(make=False) as slots:
                taken.extend(slots)

        t = threading.Thread(target=close, daemon=True)
        t.start()
        time.sleep(0.05)
        assert taken == []  # waits while the slot is lent
    t.join(10)
    assert taken == [lent] and len(made) == 1


def test_two_warm_ups_at_once_each_get_every_slot_instead_of_waiting_forever():
    made = []

    def make():
        time.sleep(0.05)  # both callers are inside all(), each has taken some slots, when the last are made
        made.append(object())
        return made[-1]

    pool = SlotPool(make, size=2)
    got, start = [], threading.Barrier(2)

    def warm():
        start.wait()
        with pool.all() as slots:
            got.append(len(slots))
            time.sleep(0.01)

    threads = [threading.Thread(target=warm, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "two concurrent all() calls deadlocked"
    assert got == [2, 2] and len(made) == 2


def test_close_waits_for_lent_slots_releases_each_and_refuses_later_callers():
    from ganrt.errors import InputError

    pool = SlotPool(lambda: [], size=2)
    released, lent = [], threading.Event()

    def hold():
        with pool.slot() as s:
            lent.set()
            time.sleep(0.1)
            s.append("used")

    t = threading.Thread(target=hold)
    t.start()
    lent.wait()
    with pool.slot():
        pass
    pool.close(released.append)
    t.join()
    assert sorted(map(len, released)) == [0, 1], "close released a slot still lent (or not every slot made)"
    with pytest.raises(InputError, match="closed"):
        with pool.slot():
            pass


def test_each_key_is_built_once_even_when_many_callers_ask_at_once():
    builds = []

    def build(key):
        builds.append(key)
        time.sleep(0.05)  # long enough that every thread asks while the first build runs
        return f"compiled-{key}"

    cache = ShapeCache(build, maxsize=8)
    results = []
    threads = [threading.Thread(target=lambda k=k: results.append(cache.get(k % 2))) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(builds) == [0, 1] and cache.builds == 2
    assert sorted(set(results)) == ["compiled-0", "compiled-1"] and len(results) == 16


def test_the_cache_is_bounded_least_recently_used_first():
    cache = ShapeCache(lambda k: k * 10, maxsize=2)
    cache.get(1), cache.get(2), cache.get(1), cache.get(3)
    assert cache.keys() == [1, 3] and cache.builds == 3
    assert cache.get(2) == 20 and cache.builds == 4
