"""Latents from seeds: the one documented mapping, so a seed draws the same image on every backend.

``z[i] = numpy.random.Generator(PCG64(seed_i)).standard_normal(latent_dim)`` as float32. Labels, when a
caller asks for random ones, come from a separate stream (``PCG64([seed, 1])``) so that adding labels
never changes the latent of a seed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ganrt.errors import InputError


def _seed_list(seeds: Iterable[int]) -> list[int]:
    out = []
    for s in seeds:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0:
            raise InputError(f"seeds must be non-negative integers, got {s!r}")
        out.append(int(s))
    return out


def latents_from_seeds(seeds: Iterable[int], latent_dim: int) -> np.ndarray:
    """(B, latent_dim) float32, one row per seed."""
    seeds = _seed_list(seeds)
    z = np.empty((len(seeds), latent_dim), dtype=np.float32)
    for i, s in enumerate(seeds):
        z[i] = np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim)
    return z


def labels_from_seeds(seeds: Iterable[int], num_classes: int) -> np.ndarray:
    """(B,) int64 uniform labels, drawn from a stream independent of the latents."""
    seeds = _seed_list(seeds)
    if num_classes < 1:
        raise InputError("labels need a conditional generator (num_classes >= 1)")
    return np.array(
        [np.random.Generator(np.random.PCG64([s, 1])).integers(num_classes) for s in seeds], dtype=np.int64
    )


def parse_seed_range(text: str) -> list[int]:
    """'0-63' -> [0..63]; '1,5,9' -> [1, 5, 9]; '0-3,10' -> [0, 1, 2, 3, 10]."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise InputError(f"cannot read seeds {text!r}: expected e.g. '0-63' or '1,5,9'") from None
    if not seeds:
        raise InputError(f"no seeds in {text!r}")
    return _seed_list(seeds)
