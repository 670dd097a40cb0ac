"""Inception Score (Salimans et al. 2016) from class probabilities: exp(E_x KL(p(y|x) || p(y))).

Computed per split (the convention: 10 splits) and reported as mean and standard deviation over splits.
With Inception-v3 probabilities it is the published IS; with the domain classifier it is IS-domain.
Ranges from 1 (every image gets the same prediction) to the number of classes (confident and uniform).
"""

from __future__ import annotations

import numpy as np

from ganrt.errors import MetricError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def inception_score(probs: np.ndarray, *, splits: int = 10, eps: float = 1e-12) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(mean KL(p(y|x) || p(y))) for (N, K) rows summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < splits or splits < 1:
        raise MetricError(f"Inception Score needs (N, K) probabilities with N >= splits ({splits}), got {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise MetricError("Inception Score needs probabilities (rows >= 0 summing to 1); apply softmax to logits")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(py + eps))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
