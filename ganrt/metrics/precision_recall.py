"""Improved precision and recall (Kynkäänniemi et al. 2019) from k-NN manifolds in feature space.

Each set's manifold is the union of balls around its samples whose radius is the distance to that sample's
k-th nearest neighbour within the set (k = 3, the paper's choice; the sample itself does not count).
Precision: the fraction of generated samples inside the real manifold (fidelity). Recall: the fraction of
real samples inside the generated manifold (coverage).
"""

from __future__ import annotations

import numpy as np

from ganrt.errors import MetricError


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = 3, batch: int = 1024) -> np.ndarray:
    """Squared distance from each sample to its k-th nearest other sample, (N,)."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] <= k:
        raise MetricError(f"k-NN radii need more than k={k} samples, got {x.shape[0]}")
    out = np.empty(x.shape[0])
    for s in range(0, x.shape[0], batch):
        d = _sq_dists(x[s:s + batch], x)
        # index k of the sorted row: position 0 is the sample itself (distance 0)
        out[s:s + batch] = np.partition(d, k, axis=1)[:, k]
    return out


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, batch: int) -> float:
    inside = np.zeros(queries.shape[0], dtype=bool)
    for s in range(0, queries.shape[0], batch):
        d = _sq_dists(queries[s:s + batch], manifold)
        inside[s:s + batch] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, batch: int = 1024) -> tuple[float, float]:
    """(precision, recall) of ``fake`` features against ``real`` features, both (N, F)."""
    r = np.asarray(real, dtype=np.float64)
    f = np.asarray(fake, dtype=np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise MetricError(f"precision/recall need two (N, F) feature sets with one F, got {r.shape} and {f.shape}")
    precision = _coverage(r, knn_radii(r, k, batch), f, batch)
    recall = _coverage(f, knn_radii(f, k, batch), r, batch)
    return precision, recall
