"""The metric math against reference computations (SciPy sqrtm, naive loops, closed forms)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from ganrt.errors import MetricError
from ganrt.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_features
from ganrt.metrics.inception_score import inception_score, softmax
from ganrt.metrics.kid import kernel_inception_distance, mmd2_unbiased
from ganrt.metrics.precision_recall import knn_radii, precision_recall


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _fd_reference(mu1, s1, mu2, s2):
    """The pytorch-fid formula with scipy.linalg.sqrtm (no `disp`: works on SciPy 1.18)."""
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fd_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 24))
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fd_between_diagonal_gaussians_equals_closed_form():
    rng = np.random.default_rng(1)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-12, abs=1e-12)


def test_fd_between_scaled_covariances_equals_closed_form():
    # S2 = c^2 S1 commutes with S1: tr((S1 S2)^(1/2)) = c tr(S1), FD = |dmu|^2 + (1 - c)^2 tr(S1)
    rng = np.random.default_rng(2)
    s1 = _random_spd(rng, 20)
    c = 1.7
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    closed = ((mu1 - mu2) ** 2).sum() + (1 - c) ** 2 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, c * c * s1) == pytest.approx(closed, rel=1e-10)


def test_fd_matches_scipy_sqrtm_reference_on_general_covariances():
    rng = np.random.default_rng(3)
    for d in (2, 8, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d, scale=2.0)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_reference(mu1, s1, mu2, s2), rel=1e-9)


def test_fd_stays_finite_and_nonnegative_with_singular_covariances():
    rng = np.random.default_rng(4)
    # 20 samples in 64 dimensions: rank-deficient covariances
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.3
    fd = frechet_distance_features(a, b)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_rejects_mismatched_dimensions():
    with pytest.raises(MetricError, match="one F"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_statistics_are_float64_and_unbiased():
    x = np.random.default_rng(5).normal(size=(50, 3)).astype(np.float32)
    s = feature_statistics(x)
    assert s.mu.dtype == np.float64 and s.sigma.dtype == np.float64
    np.testing.assert_allclose(s.sigma, np.cov(x.astype(np.float64), rowvar=False, ddof=1))


def test_statistics_reject_nonfinite_features():
    x = np.ones((4, 2))
    x[1, 1] = np.nan
    with pytest.raises(MetricError, match="NaN or Inf"):
        feature_statistics(x)


def _mmd2_naive(x, y):
    m = len(x)
    k = lambda a, b: (a @ b / x.shape[1] + 1) ** 3
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return sxx + syy - 2 * sxy


def test_mmd2_matches_naive_loop():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_naive(x, y), rel=1e-10)


def test_kid_is_unbiased_on_two_samples_of_one_distribution():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    mean, std = kernel_inception_distance(x, y, subsets=50, subset_size=200)
    # ~0 in expectation: within a few standard errors of zero, and may be negative
    assert abs(mean) < 3 * std / np.sqrt(50) + 1e-4
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=50, subset_size=200)
    assert shifted > 10 * std


def test_kid_is_deterministic_for_a_seed_and_rejects_tiny_sets():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(100, 4)), rng.normal(size=(100, 4))
    assert kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=3) == \
        kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=3)
    with pytest.raises(MetricError, match="at least 2"):
        kernel_inception_distance(x[:1], y)


def test_inception_score_of_uniform_and_one_hot_probabilities():
    k, n = 10, 1000
    uniform = np.full((n, k), 1.0 / k)
    assert inception_score(uniform, splits=10)[0] == pytest.approx(1.0)
    one_hot = np.eye(k)[np.arange(n) % k]  # confident and covering every class evenly
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    collapsed = np.eye(k)[np.zeros(n, dtype=int)]  # confident but always the same class
    assert inception_score(collapsed, splits=10)[0] == pytest.approx(1.0, rel=1e-6)


def test_inception_score_rejects_logits():
    with pytest.raises(MetricError, match="softmax"):
        inception_score(np.random.default_rng(0).normal(size=(20, 3)), splits=2)
    assert np.allclose(softmax(np.array([[1000.0, 0.0]])).sum(), 1.0)


def test_knn_radii_exclude_the_sample_itself():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # 1st neighbours: 1, 1, 2, 3, 4 (squared: 1, 1, 4, 9, 16)
    np.testing.assert_allclose(knn_radii(x, k=1), [1, 1, 4, 9, 16])
    np.testing.assert_allclose(knn_radii(x, k=2), [9, 4, 9, 16, 49])


def test_precision_recall_on_constructed_sets():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(400, 2))
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # fakes collapsed onto one real point: all inside the real manifold (precision 1), cover little (recall low)
    collapsed = np.repeat(real[:1], 400, axis=0) + rng.normal(scale=1e-3, size=(400, 2))
    p, r = precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.05
    # half the fakes far away: precision about one half
    mixed = np.concatenate([real[:200] + rng.normal(scale=1e-3, size=(200, 2)), far[:200]])
    p, _ = precision_recall(real, mixed)
    assert p == pytest.approx(0.5, abs=0.01)
