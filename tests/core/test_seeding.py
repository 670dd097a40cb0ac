"""The vectorized seeding draws exactly numpy's streams: PCG64(seed) for latents, PCG64([seed, 1]) for labels,
for requests of few seeds (built one by one) and of many (the vectorized hash)."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.latents import labels_from_seeds, latents_from_seeds
from ganrt.seeding import VECTOR_FROM, entropy_words, state_words

EDGES = [0, 1, 2, 255, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**40 + 7, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]


def seeds_to_check():
    rng = np.random.default_rng(0)
    return EDGES + [int(x) for x in rng.integers(0, 2**63, 300)] + [int(x) << 1 for x in rng.integers(0, 2**63, 300)] \
        + list(range(200))


def test_state_words_equal_numpy_seed_sequence():
    seeds = seeds_to_check()
    words = state_words(entropy_words(np.array(seeds, dtype=np.uint64)))
    for s, w in zip(seeds, words, strict=True):
        np.testing.assert_array_equal(w, np.random.SeedSequence(s).generate_state(4, np.uint64), err_msg=str(s))
    label_words = state_words(entropy_words(np.array(seeds[:50], dtype=np.uint64), extra=(1,)))
    for s, w in zip(seeds[:50], label_words, strict=True):
        np.testing.assert_array_equal(w, np.random.SeedSequence([s, 1]).generate_state(4, np.uint64))


@pytest.mark.parametrize("latent_dim", [1, 64, 512])
def test_latents_are_numpys_pcg64_streams_bit_for_bit(latent_dim):
    seeds = seeds_to_check()
    assert len(seeds) >= VECTOR_FROM
    for few in (seeds[:1], seeds[:VECTOR_FROM - 1]):  # below the vectorized path's threshold
        np.testing.assert_array_equal(latents_from_seeds(few, latent_dim), np.stack([
            np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim).astype(np.float32) for s in few]))
    expected = np.stack([np.random.Generator(np.random.PCG64(s)).standard_normal(latent_dim).astype(np.float32)
                         for s in seeds])
    np.testing.assert_array_equal(latents_from_seeds(seeds, latent_dim), expected)


def test_labels_are_numpys_pcg64_seed_1_streams():
    seeds = seeds_to_check()
    expected = [np.random.Generator(np.random.PCG64([s, 1])).integers(10) for s in seeds]
    np.testing.assert_array_equal(labels_from_seeds(seeds, 10), expected)
    np.testing.assert_array_equal(labels_from_seeds(seeds[:5], 10), expected[:5])
    assert set(labels_from_seeds(range(500), 7).tolist()) == set(range(7))
