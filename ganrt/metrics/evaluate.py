"""Evaluate a generator against its data: FD, KID, IS and precision/recall on one feature extractor.

Backend-agnostic: a generator is any ``generate(seeds) -> uint8 (B, H, W, C)`` callable, so a torch module
(:func:`torch_generate_fn`), a bundle loaded by ``ganrt.runtime.load`` (its ``generate``) or an exported
variant are measured the same way. Core code: it takes the real images and their identity as arrays, never
importing the training stage.

For the training loop, every N steps::

    from ganrt.metrics.evaluate import evaluate_generator, torch_generate_fn, flat_metrics
    from ganrt.metrics.extractors import get_extractor
    extractor = get_extractor("domain", classifier="clf.safetensors")        # once
    result = evaluate_generator(torch_generate_fn(G_ema, spec), dataset.images, dataset.identity,
                                extractor, n=1000)                            # every N steps
    log({"step": step, **flat_metrics(result)})                              # -> metrics.jsonl

The real features are cached (``ganrt.metrics.stats_cache``), so each call costs only the fake side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ganrt.errors import MetricError
from ganrt.metrics.extractors import FeatureExtractor
from ganrt.metrics.frechet import feature_statistics, frechet_distance_stats
from ganrt.metrics.inception_score import inception_score, softmax
from ganrt.metrics.kid import kernel_inception_distance
from ganrt.metrics.precision_recall import precision_recall
from ganrt.metrics.stats_cache import reference_features

GenerateFn = Callable[[Sequence[int]], np.ndarray]


def torch_generate_fn(module, spec, *, batch_size: int = 64, truncation: float | None = None) -> GenerateFn:
    """``seeds -> uint8 (B, H, W, C)`` for a torch generator, with ganrt's seed->latent/label mapping."""
    import torch

    from ganrt.latents import labels_from_seeds, latents_from_seeds
    from ganrt.postprocess import ToUint8NHWC

    post = ToUint8NHWC(spec.output_range)

    def generate(seeds: Sequence[int]) -> np.ndarray:
        seeds = list(seeds)
        out = []
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                for s in range(0, len(seeds), batch_size):
                    chunk = seeds[s:s + batch_size]
                    z = torch.from_numpy(latents_from_seeds(chunk, spec.latent_dim))
                    labels = torch.from_numpy(labels_from_seeds(chunk, spec.num_classes)) if spec.conditional else None
                    trunc = (torch.full((len(chunk),), float(truncation)) if spec.has_truncation
                             and truncation is not None else None)
                    out.append(post(module(z, labels=labels, truncation=trunc)).numpy())
        finally:
            module.train(was_training)
        return np.concatenate(out)

    return generate


def generate_images(generate: GenerateFn, seeds: Sequence[int], *, batch_size: int = 64,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    seeds = list(seeds)
    out = []
    for s in range(0, len(seeds), batch_size):
        out.append(np.asarray(generate(seeds[s:s + batch_size])))
        if progress is not None:
            progress(len(out[-1]))
    images = np.concatenate(out)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise MetricError(f"a generator must return uint8 images (B, H, W, C), got {images.dtype} {images.shape}")
    return images


def metrics_from_features(real: np.ndarray, fake: np.ndarray, extractor: FeatureExtractor, *,
                          fake_logits: np.ndarray | None = None, real_stats=None, kid_subsets: int = 100,
                          kid_subset_size: int = 1000, is_splits: int = 10, k: int = 3) -> dict[str, Any]:
    """Metrics of fake vs real features, keyed by the extractor's labelled names (FD-domain, FID, ...)."""
    names = extractor.metric_names()
    real_stats = real_stats or feature_statistics(real)
    out: dict[str, Any] = {names["fd"]: frechet_distance_stats(feature_statistics(fake), real_stats)}
    kid_mean, kid_std = kernel_inception_distance(real, fake, subsets=kid_subsets, subset_size=kid_subset_size)
    out[names["kid"]] = {"mean": kid_mean, "std": kid_std}
    if fake_logits is not None and fake_logits.shape[0] >= is_splits:
        is_mean, is_std = inception_score(softmax(fake_logits), splits=is_splits)
        out[names["is"]] = {"mean": is_mean, "std": is_std}
    if min(len(real), len(fake)) > k:
        p, r = precision_recall(real, fake, k=k)
        out[f"precision{extractor.label}"] = p
        out[f"recall{extractor.label}"] = r
    return out


def evaluate_generator(generate: GenerateFn, real_images: np.ndarray, real_identity: dict[str, Any],
                       extractor: FeatureExtractor, *, n: int = 2000, seed_start: int = 0, batch_size: int = 64,
                       cache_dir: str | os.PathLike | None = None, use_cache: bool = True, kid_subsets: int = 100,
                       kid_subset_size: int = 1000, is_splits: int = 10, k: int = 3,
                       progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """FD/KID/IS/PR of ``n`` generated images (seeds ``seed_start..``) against ``n`` real ones."""
    if n < max(is_splits, k + 1, 2):
        raise MetricError(f"evaluation needs n >= {max(is_splits, k + 1, 2)} images, got {n}")
    t0 = time.perf_counter()
    ref = reference_features(real_images, real_identity, extractor, n=n, cache_dir=cache_dir, use_cache=use_cache,
                             batch_size=batch_size, progress=progress)
    fake_images = generate_images(generate, range(seed_start, seed_start + n), batch_size=batch_size,
                                  progress=progress)
    fake, fake_logits = extractor.extract(fake_images, batch_size=batch_size, progress=progress)
    metrics = metrics_from_features(ref.features, fake, extractor, fake_logits=fake_logits, real_stats=ref.stats,
                                    kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                                    is_splits=is_splits, k=k)
    return {"metrics": metrics, "extractor": extractor.identity(), "n_real": int(len(ref.features)),
            "n_fake": int(n), "seeds": [seed_start, seed_start + n - 1], "reference_cached": ref.cached,
            "dataset": {k_: real_identity.get(k_) for k_ in ("name", "n", "resolution", "channels", "sha256")},
            "seconds": time.perf_counter() - t0}


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """{"FD-domain": x, "KID-domain_mean": y, ...}: one number per key, for metrics.jsonl."""
    flat: dict[str, float] = {}
    for name, value in result["metrics"].items():
        if isinstance(value, dict):
            flat.update({f"{name}_{k}": float(v) for k, v in value.items()})
        else:
            flat[name] = float(value)
    return flat
