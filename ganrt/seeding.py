"""numpy's ``PCG64(seed)`` for many seeds at once: the SeedSequence hashing vectorized, bit for bit.

``numpy.random.Generator(PCG64(s))`` spends most of its time (about 90% for a 64-d latent) in
``SeedSequence``: hashing the seed into the pool, then into PCG64's 128-bit state and increment. That
hashing is 32-bit multiplies, xors and shifts, so it vectorizes over seeds; :func:`generators` then builds
each ``PCG64`` from its precomputed words (an ``ISeedSequence`` that returns them), skipping the hash. The
streams are exactly numpy's: tests compare against ``PCG64(s)`` for seeds across [0, 2**64 - 1] and for the
``PCG64([s, 1])`` label stream. This follows numpy's ``bit_generator.pyx`` (``SeedSequence.mix_entropy`` and
``generate_state``) for entropy of at most 4 words (the pool size), which is every seed up to 2**64 - 1 with
up to two extra words; longer entropy is not handled here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
XSHIFT = 16
POOL_SIZE = 4


def entropy_words(seeds: np.ndarray, extra: tuple[int, ...] = ()) -> np.ndarray:
    """(n, 4) uint32: the entropy numpy assembles for ``seeds`` (uint64) followed by ``extra`` small words,
    zero-padded to the pool size (a word 0 and a missing word hash alike)."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    lo = (seeds & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (seeds >> np.uint64(32)).astype(np.uint32)
    out = np.zeros((len(seeds), POOL_SIZE), np.uint32)
    out[:, 0] = lo
    two = hi != 0  # a seed of 2**32 or more is two words, little end first
    out[two, 1] = hi[two]
    for k, word in enumerate(extra):
        if len(extra) + 2 > POOL_SIZE:
            raise ValueError("entropy longer than the pool is not handled here")
        out[:, 1 + k] = np.where(two, out[:, 1 + k], word)
        out[two, 2 + k] = word
    return out


def state_words(entropy: np.ndarray) -> np.ndarray:
    """(n, 4) uint64: ``SeedSequence(entropy).generate_state(4, np.uint64)`` for each row of ``entropy``."""
    entropy = np.asarray(entropy, dtype=np.uint32)
    n = entropy.shape[0]
    u32 = np.uint32
    with np.errstate(over="ignore"):
        hash_const = np.full(n, INIT_A, np.uint32)

        def hashmix(value):
            nonlocal hash_const
            value = value ^ hash_const
            hash_const = hash_const * u32(MULT_A)
            value = value * hash_const
            return value ^ (value >> u32(XSHIFT))

        def mix(x, y):
            r = u32(MIX_MULT_L) * x - u32(MIX_MULT_R) * y
            return r ^ (r >> u32(XSHIFT))

        pool = [hashmix(entropy[:, i]) for i in range(POOL_SIZE)]
        for src in range(POOL_SIZE):
            for dst in range(POOL_SIZE):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        words = np.empty((n, 2 * POOL_SIZE), np.uint32)
        hc = INIT_B
        for i in range(2 * POOL_SIZE):
            v = pool[i % POOL_SIZE] ^ u32(hc)
            hc = (hc * MULT_B) & 0xFFFFFFFF
            v = v * u32(hc)
            words[:, i] = v ^ (v >> u32(XSHIFT))
    return words.astype("<u4").view("<u8").astype(np.uint64)


class _Words(np.random.bit_generator.ISeedSequence):
    """An ISeedSequence that hands PCG64 the state words computed in advance."""

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):  # PCG64 asks for 4 uint64 words
        return self.words


def generators(entropy: np.ndarray) -> Iterator[np.random.Generator]:
    """``numpy.random.Generator(PCG64(SeedSequence(row)))`` for each row of ``entropy``, in order."""
    for words in state_words(entropy):
        yield np.random.Generator(np.random.PCG64(_Words(words)))
