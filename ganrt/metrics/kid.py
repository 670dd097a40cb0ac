"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.

    k(x, y) = (x . y / d + 1)^3

estimated on ``subsets`` random subsets of ``subset_size`` samples drawn without replacement from each set;
the result is the mean and standard deviation over subsets (the convention of torch-fidelity and
StyleGAN's metrics). The subset size is capped at half the smaller set so that subsets differ.
The unbiased estimator drops the diagonal of the within-set kernel matrices, so two
samples of one distribution give ~0 in expectation (it can be slightly negative).
"""

from __future__ import annotations

import numpy as np

from ganrt.errors import MetricError


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two (m, d) samples of equal size under the cubic polynomial kernel."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over random subsets; ``subset_size`` is capped at half the smaller set."""
    x = np.asarray(features1, dtype=np.float64)
    y = np.asarray(features2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MetricError(f"KID needs two (N, F) feature sets with one F, got {x.shape} and {y.shape}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise MetricError(f"KID needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    # at most half of the smaller set, so subsets differ and the std over subsets means something
    m = min(subset_size, max(2, min(x.shape[0], y.shape[0]) // 2))
    if subsets < 1:
        raise MetricError(f"KID needs subsets >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)],
                                     y[rng.choice(y.shape[0], m, replace=False)]) for _ in range(subsets)])
    return float(values.mean()), float(values.std())
