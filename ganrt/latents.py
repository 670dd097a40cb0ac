"""Latents from seeds: the one documented mapping, so a seed draws the same image on every backend.

``z[i] = numpy.random.Generator(PCG64(seed_i)).standard_normal(latent_dim)`` as float32. Labels, when a
caller asks for random ones, come from a separate stream (``PCG64([seed, 1])``) so that adding labels
never changes the latent of a seed. A seed is an integer in [0, 2**64 - 1] (it is stored as uint64).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ganrt.errors import InputError
from ganrt.seeding import VECTOR_FROM, entropy_words, streams

MAX_SEED = 2**64 - 1
MAX_SEEDS = 1_000_000  # parse_seed_range refuses ranges past this many seeds, before making the list


def _seed_list(seeds: Iterable[int]) -> list[int]:
    out = []
    for s in seeds:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or not 0 <= s <= MAX_SEED:
            raise InputError(f"seeds must be non-negative integers up to 2**64 - 1, got {s!r}")
        out.append(int(s))
    return out


def _streams(seeds: list[int], extra: tuple[int, ...] = ()):
    """numpy's ``Generator(PCG64([seed, *extra]))`` per seed: built one by one for a few seeds, from the
    vectorized hash for many (ganrt.seeding: the same streams, bit for bit)."""
    if len(seeds) < VECTOR_FROM:
        return (np.random.Generator(np.random.PCG64([s, *extra] if extra else s)) for s in seeds)
    return streams(entropy_words(np.array(seeds, dtype=np.uint64), extra=extra))


def latents_from_seeds(seeds: Iterable[int], latent_dim: int) -> np.ndarray:
    """(B, latent_dim) float32, one row per seed: ``Generator(PCG64(seed)).standard_normal(latent_dim)``."""
    seeds = _seed_list(seeds)
    z = np.empty((len(seeds), latent_dim), dtype=np.float32)
    for i, gen in enumerate(_streams(seeds)):
        z[i] = gen.standard_normal(latent_dim)
    return z


def labels_from_seeds(seeds: Iterable[int], num_classes: int) -> np.ndarray:
    """(B,) int64 uniform labels, drawn from a stream independent of the latents (``PCG64([seed, 1])``)."""
    seeds = _seed_list(seeds)
    if num_classes < 1:
        raise InputError("labels need a conditional generator (num_classes >= 1)")
    return np.array([gen.integers(num_classes) for gen in _streams(seeds, extra=(1,))], dtype=np.int64)


def parse_seed_range(text: str, max_count: int = MAX_SEEDS) -> list[int]:
    """'0-63' -> [0..63]; '1,5,9' -> [1, 5, 9]; '0-3,10' -> [0, 1, 2, 3, 10].

    Every seed must be in [0, 2**64 - 1], and there may be at most ``max_count`` of them: both are checked
    before any list is made, so '0-9999999999' is a one-line InputError, not a MemoryError.
    """
    ranges: list[tuple[int, int]] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = part.split("-", 1) if "-" in part else (part, part)
            lo, hi = int(a), int(b)
        except ValueError:
            raise InputError(f"cannot read seeds {text!r}: expected e.g. '0-63' or '1,5,9'") from None
        if hi < lo:
            raise InputError(f"cannot read seeds {text!r}: the range {part!r} ends before it starts")
        if lo < 0 or hi > MAX_SEED:
            raise InputError(f"seeds must be integers in [0, 2**64 - 1] ({MAX_SEED}); {part!r} is outside")
        ranges.append((lo, hi))
    if not ranges:
        raise InputError(f"no seeds in {text!r}")
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > max_count:
        raise InputError(f"seeds {text!r} are {count} seeds; at most {max_count} per call: split the range")
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]
