"""Fréchet distance between two Gaussians fitted to feature sets (FID when the features are Inception's).

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

Statistics are float64. ``tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of
``A = S1^(1/2) S2 S1^(1/2)``: ``A`` is symmetric positive semi-definite and similar to ``S1 S2``, so a
symmetric eigensolver (``numpy.linalg.eigh``) gives real eigenvalues and round-off negatives are clipped to
zero. This needs no ``scipy.linalg.sqrtm`` (whose ``disp`` argument SciPy 1.18 removed) and stays finite
for singular or near-singular covariances (fewer samples than feature dimensions), where ``sqrtm`` of the
non-symmetric product returns complex values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ganrt.errors import MetricError


@dataclass(frozen=True)
class GaussianStats:
    mu: np.ndarray  # (F,) float64
    sigma: np.ndarray  # (F, F) float64
    n: int  # number of samples they were fitted on


def feature_statistics(features: np.ndarray) -> GaussianStats:
    """Mean and (unbiased, ddof=1) covariance of (N, F) features, in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricError(f"feature statistics need (N, F) features with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise MetricError("features hold NaN or Inf; the generator or extractor produced non-finite values")
    return GaussianStats(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]),
                         n=int(x.shape[0]))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2."""
    r = _psd_sqrt(np.asarray(sigma1, dtype=np.float64))
    a = r @ np.asarray(sigma2, dtype=np.float64) @ r
    w = np.linalg.eigvalsh((a + a.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); >= 0 up to round-off (clipped at 0)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    f = mu1.shape[0]
    if mu2.shape != (f,) or sigma1.shape != (f, f) or sigma2.shape != (f, f):
        raise MetricError(f"Fréchet distance needs means (F,) and covariances (F, F) of one F; got {mu1.shape}, "
                          f"{sigma1.shape}, {mu2.shape}, {sigma2.shape} (features from different extractors?)")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(fd, 0.0))


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FD between the Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance_stats(feature_statistics(features1), feature_statistics(features2))
