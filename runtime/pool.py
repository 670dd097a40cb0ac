"""Thread-safety building blocks of the backends: batch buckets, a pool of slots, a per-shape cache.

- ``batch_buckets`` / ``bucket_for``: the bounded set of batch sizes a static-shape engine is compiled for
  (1, 2, 4, ..., max_batch plus any exact sizes a backend asks for); a request is padded up to its bucket.
- ``SlotPool``: N interchangeable single-caller objects (OpenVINO infer requests with their bound buffers,
  TensorRT execution contexts, captured CUDA graphs), made on first need, each lent to one caller at a time;
  ``all()`` (warm-up) takes every slot, one such caller at a time; ``close()`` waits for the lent slots,
  releases each, and refuses later callers.
- ``ShapeCache``: state built once per key (a compiled model per batch bucket), every other caller of the
  same key waits for that one build, with a bound on the number of entries and a count of builds (a
  warmed-up backend must not build again).

Pure Python: the GPU backends' pool logic is tested on the CPU through these.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Generic, TypeVar

from ganrt.errors import InputError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def batch_buckets(max_batch: int, exact: Iterable[int] = ()) -> tuple[int, ...]:
    """Powers of two below ``max_batch``, ``max_batch`` itself and the ``exact`` sizes that fit, sorted."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = {max_batch} | {b for b in exact if 1 <= b <= max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return tuple(sorted(sizes))


def bucket_for(batch: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds ``batch`` (buckets sorted; the last is the largest batch run at once)."""
    for b in buckets:
        if b >= batch:
            return b
    raise ValueError(f"batch {batch} is larger than the largest bucket {buckets[-1]}")


class SlotPool(Generic[T]):
    """Up to ``size`` objects made by ``make()`` on first need; ``with pool.slot() as s`` lends one to one caller.

    A caller waits while every slot is lent. Slots are reused last-in first-out, so a light load keeps
    using the same (warm) few.
    """

    def __init__(self, make: Callable[[], T], size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one slot, got {size}")
        self._make = make
        self.size = int(size)
        self._free: list[T] = []
        self._cond = threading.Condition()
        self._whole = threading.Lock()  # one all() at a time: two, each holding part of the slots, would wait forever
        self.created = 0
        self.closed = False

    def _acquire(self) -> T:
        with self._cond:
            while True:
                if self.closed:
                    raise InputError("this generator is closed; load the bundle again")
                if self._free:
                    return self._free.pop()
                if self.created < self.size:
                    self.created += 1
                    break  # make one, outside the lock
                self._cond.wait()
        try:
            return self._make()
        except BaseException:
            with self._cond:
                self.created -= 1
                self._cond.notify_all()  # a caller waiting for a slot may make the one this call could not
            raise

    def _release(self, items: Iterable[T]) -> None:
        with self._cond:
            self._free.extend(items)
            self._cond.notify_all()

    @contextlib.contextmanager
    def slot(self) -> Iterator[T]:
        item = self._acquire()
        try:
            yield item
        finally:
            self._release([item])

    @contextlib.contextmanager
    def all(self, make: bool = True) -> Iterator[list[T]]:
        """Every slot at once, waiting for the lent ones. ``make``: all ``size`` of them, made if needed (warm-up
        prepares each one for a batch size); without it, the ones made so far (closing releases those)."""
        items: list[T] = []
        with self._whole:
            try:
                if make:
                    for _ in range(self.size):
                        items.append(self._acquire())
                else:
                    with self._cond:
                        while len(self._free) < self.created:
                            self._cond.wait()
                        items, self._free = self._free, []
                yield items
            finally:
                self._release(items)

    def close(self, release: Callable[[T], None]) -> None:
        """Refuse new callers, wait for the lent slots to come back, then ``release`` every slot made. A
        caller that got past the backend's own closed check gets a clear InputError, never a torn slot."""
        with self._whole, self._cond:
            self.closed = True
            self._cond.notify_all()  # callers waiting for a slot now fail instead of waiting
            while len(self._free) < self.created:
                self._cond.wait()
            items, self._free = self._free, []
        for item in items:
            release(item)

class ShapeCache(Generic[K, T]):
    """``get(key)`` builds ``build(key)`` once; concurrent callers of that key wait for the one build.

    At most ``maxsize`` entries are kept (least recently used dropped first; an entry a caller still holds
    stays valid for it). ``builds`` counts every build.
    """

    def __init__(self, build: Callable[[K], T], maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._build = build
        self.maxsize = int(maxsize)
        self._entries: OrderedDict[K, T] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[K, threading.Lock] = {}
        self.builds = 0

    def get(self, key: K) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:  # built by the caller we waited for
                    self._entries.move_to_end(key)
                    return self._entries[key]
            value = self._build(key)
            with self._lock:
                self.builds += 1
                self._entries[key] = value
                while len(self._entries) > self.maxsize:
                    old, _ = self._entries.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._key_locks.clear()
