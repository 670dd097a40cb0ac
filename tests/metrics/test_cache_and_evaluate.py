"""Reference-statistics cache keys and the whole evaluation of a generator."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.errors import MetricError
from ganrt.metrics.evaluate import evaluate_generator, flat_metrics, torch_generate_fn
from ganrt.metrics.extractors import PixelProjection
from ganrt.metrics.stats_cache import reference_features


def _real(n=120, size=32, seed=0):
    images = np.random.default_rng(seed).integers(0, 255, size=(n, size, size, 1)).astype(np.uint8)
    return images, {"name": "noise", "sha256": f"noise-{seed}", "n": n, "resolution": size, "channels": 1}


def test_reference_features_are_cached_by_dataset_extractor_and_n(tmp_path):
    ext = PixelProjection()
    images, ident = _real()
    first = reference_features(images, ident, ext, n=100, cache_dir=tmp_path)
    again = reference_features(images, ident, ext, n=100, cache_dir=tmp_path)
    assert not first.cached and again.cached
    np.testing.assert_allclose(first.features, again.features, rtol=1e-6)
    np.testing.assert_array_equal(first.stats.sigma, again.stats.sigma)
    other_n = reference_features(images, ident, ext, n=90, cache_dir=tmp_path)
    other_data = reference_features(*_real(seed=1), ext, n=100, cache_dir=tmp_path)
    assert not other_n.cached and not other_data.cached
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files
    with np.load(next(tmp_path.glob("*.npz")), allow_pickle=False) as f:
        assert f["mu"].dtype == np.float64


def test_evaluate_generator_reports_labelled_metrics(tiny_checkpoint, tmp_path):
    from ganrt.checkpoint import load_generator

    module, spec = load_generator(tiny_checkpoint)
    images, ident = _real(n=60)
    result = evaluate_generator(torch_generate_fn(module, spec), images, ident, PixelProjection(), n=40,
                                cache_dir=tmp_path, kid_subsets=5, kid_subset_size=20)
    m = result["metrics"]
    assert set(m) == {"FD-pixels", "KID-pixels", "precision-pixels", "recall-pixels"}
    assert m["FD-pixels"] > 0 and result["n_fake"] == 40 and result["n_real"] == 40
    flat = flat_metrics(result)
    assert set(flat) >= {"FD-pixels", "KID-pixels_mean", "KID-pixels_std"}
    # same seeds -> same images -> same result
    again = evaluate_generator(torch_generate_fn(module, spec), images, ident, PixelProjection(), n=40,
                               cache_dir=tmp_path, kid_subsets=5, kid_subset_size=20)
    assert again["metrics"]["FD-pixels"] == pytest.approx(m["FD-pixels"], rel=1e-9)
    assert again["reference_cached"]


def test_evaluate_rejects_too_few_images():
    images, ident = _real(n=20)
    with pytest.raises(MetricError, match="n >= 10"):
        evaluate_generator(lambda seeds: images[: len(seeds)], images, ident, PixelProjection(), n=5)
