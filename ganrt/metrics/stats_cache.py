"""Cached reference features of a dataset, keyed by everything that changes them.

The key is the sha256 of ``{dataset identity (pixel sha256, n, resolution, channels), extractor identity
(name, weights sha256, resize), N, subsample seed}``; a different classifier, dataset or N never hits an old
entry. Entries are ``.npz`` files (``allow_pickle=False`` on read) written atomically: ``features``
(N, F) float32, ``logits`` (N, K) float32 when the extractor has them, ``mu`` / ``sigma`` float64 fitted on
the float64 features, and ``key`` (the JSON the key was hashed from).

Default directory: ``$GANRT_CACHE_DIR/stats`` or ``~/.cache/ganrt/stats``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.fileio import atomic_path
from ganrt.metrics.extractors import FeatureExtractor
from ganrt.metrics.frechet import GaussianStats, feature_statistics


@dataclass
class ReferenceFeatures:
    features: np.ndarray  # (N, F)
    logits: np.ndarray | None
    stats: GaussianStats
    key: dict[str, Any]
    cached: bool  # True when read from the cache


def default_cache_dir() -> Path:
    root = os.environ.get("GANRT_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ganrt") / "stats"


def cache_key(dataset_identity: dict[str, Any], extractor: FeatureExtractor, n: int, seed: int) -> dict[str, Any]:
    ds = {k: dataset_identity.get(k) for k in ("name", "sha256", "n", "resolution", "channels", "labels_sha256")}
    return {"dataset": ds, "extractor": extractor.identity(), "n": int(n), "seed": int(seed)}


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n, n_total) images drawn without replacement (all, in order, when n >= total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def reference_features(images: np.ndarray, dataset_identity: dict[str, Any], extractor: FeatureExtractor, *,
                       n: int, seed: int = 0, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                       batch_size: int = 64, progress: Callable[[int], None] | None = None) -> ReferenceFeatures:
    """Features of ``n`` real images (a seeded subsample), from the cache when an entry matches."""
    idx = subsample(len(images), n, seed)
    key = cache_key(dataset_identity, extractor, len(idx), seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / f"{extractor.name}-{digest[:20]}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == json.dumps(key, sort_keys=True):
                    logits = f["logits"] if "logits" in f.files else None
                    return ReferenceFeatures(f["features"].astype(np.float64), logits,
                                             GaussianStats(f["mu"], f["sigma"], int(f["features"].shape[0])),
                                             key, cached=True)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign entry: recompute and overwrite it
    features, logits = extractor.extract(images[idx], batch_size=batch_size, progress=progress)
    stats = feature_statistics(features)
    if use_cache:
        arrays = {"features": features.astype(np.float32), "mu": stats.mu, "sigma": stats.sigma,
                  "key": np.array(json.dumps(key, sort_keys=True))}
        if logits is not None:
            arrays["logits"] = logits.astype(np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # a file object: np.savez would append ".npz" to a path
    return ReferenceFeatures(features, logits, stats, key, cached=False)
