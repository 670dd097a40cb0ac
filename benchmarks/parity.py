"""Fidelity parity: the same seeds through the torch fp32 reference and every variant.

Per variant: the pixel figures of ``ganrt.parity.image_parity`` (PSNR, worst image PSNR, max and mean
|diff|, fraction of values off by > 1 level, NaN/Inf count), ``fd_ref`` = FD(variant, reference) on the
same seeds, and, with real data, ``fd_delta`` = |FD(variant, real) - FD(reference, real)|. Each FD figure
sits next to its noise floor, measured with the reference against itself on other seeds:
``fd_ref_noise`` = FD(reference, reference on seeds N..2N-1) and ``fd_delta_noise`` =
|FD(reference on other seeds, real) - FD(reference, real)|. A variant whose FD change is below the noise
floor is indistinguishable from the reference at this N.

Features come from the domain classifier when one is given (FD-domain), else from the fixed random pixel
projection (FD-pixels): blind to semantics, fine for comparing variants of one generator. With the standard
Inception weights (``fid_extractor``) the same figures are computed again with them, beside, as ``fid_*``
(FID proper: comparable with published numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ganrt.metrics.extractors import FeatureExtractor
from ganrt.metrics.frechet import feature_statistics, frechet_distance_stats
from ganrt.parity import image_parity


def variant_images(generator, seeds: list[int], labels: np.ndarray | None, batch: int) -> np.ndarray:
    """uint8 (N, H, W, C) from a runtime Generator, in batches of at most ``batch``."""
    out = []
    for s in range(0, len(seeds), batch):
        lab = None if labels is None else labels[s:s + batch]
        out.append(generator.generate(seeds=seeds[s:s + batch], labels=lab))
    return np.concatenate(out)


def reference_images(bundle_path, seeds: list[int], labels: np.ndarray | None, batch: int = 64, *,
                     trust_code: bool = False) -> tuple[np.ndarray, int]:
    """(uint8 images, NaN/Inf count of the raw float output) from the bundle's torch fp32 reference weights
    (a user's module: rebuilt only with ``trust_code``)."""
    import torch

    from ganrt.bundle import Bundle
    from ganrt.checkpoint import load_generator
    from ganrt.latents import latents_from_seeds
    from ganrt.postprocess import ToUint8NHWC

    weights = Bundle.open(bundle_path, verify=False).artifact_path("weights")
    module, spec = load_generator(weights, trust_code=trust_code)
    post = ToUint8NHWC(spec.output_range)
    out, nonfinite = [], 0
    with torch.inference_mode():
        for s in range(0, len(seeds), batch):
            z = torch.from_numpy(latents_from_seeds(seeds[s:s + batch], spec.latent_dim))
            lab = None if labels is None else torch.from_numpy(labels[s:s + batch])
            trunc = torch.ones(len(z)) if spec.has_truncation else None
            x = module(z, labels=lab, truncation=trunc)
            nonfinite += int((~torch.isfinite(x)).sum())
            out.append(post(x).numpy())
    return np.concatenate(out), nonfinite


def _baseline(extractor: FeatureExtractor, ref: np.ndarray, ref_other: np.ndarray,
              real_features: np.ndarray | None) -> dict[str, Any]:
    """The reference's statistics with one extractor, and the noise floors of its FD figures."""
    ref_stats = feature_statistics(extractor.extract(ref)[0])
    other_stats = feature_statistics(extractor.extract(ref_other)[0])
    real_stats = feature_statistics(real_features) if real_features is not None else None
    ref_real = frechet_distance_stats(ref_stats, real_stats) if real_stats else None
    return {"extractor": extractor, "ref": ref_stats, "real": real_stats, "ref_real": ref_real,
            "ref_noise": frechet_distance_stats(other_stats, ref_stats),
            "delta_noise": abs(frechet_distance_stats(other_stats, real_stats) - ref_real) if real_stats else None}


def _fd_figures(prefix: str, base: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    """``<prefix>_ref`` (+ noise) and, with real data, ``<prefix>_real``, ``_delta`` (+ noise) of a variant."""
    stats = feature_statistics(base["extractor"].extract(images)[0])
    out = {f"{prefix}_label": base["extractor"].metric_names()["fd"],
           f"{prefix}_ref": frechet_distance_stats(stats, base["ref"]), f"{prefix}_ref_noise": base["ref_noise"]}
    if base["real"] is not None:
        out[f"{prefix}_real"] = frechet_distance_stats(stats, base["real"])
        out[f"{prefix}_reference_real"] = base["ref_real"]
        out[f"{prefix}_delta"] = abs(out[f"{prefix}_real"] - base["ref_real"])
        out[f"{prefix}_delta_noise"] = base["delta_noise"]
    return out


def fidelity(bundle_path, variants: dict[str, Any], extractor: FeatureExtractor, *, n: int, batch: int,
             real_features: np.ndarray | None = None, progress: Callable[[], None] | None = None,
             trust_code: bool = False, fid_extractor: FeatureExtractor | None = None,
             fid_real_features: np.ndarray | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """({variant: parity entry}, {"reference": images, variant: images}) for seeds 0..n-1."""
    from ganrt.bundle import Bundle
    from ganrt.latents import labels_from_seeds

    spec = Bundle.open(bundle_path, verify=False).spec
    seeds, other = list(range(n)), list(range(n, 2 * n))
    labels = labels_from_seeds(seeds, spec.num_classes) if spec.conditional else None
    other_labels = labels_from_seeds(other, spec.num_classes) if spec.conditional else None
    ref, _ = reference_images(bundle_path, seeds, labels, batch, trust_code=trust_code)
    ref_other, _ = reference_images(bundle_path, other, other_labels, batch, trust_code=trust_code)
    bases = {"fd": _baseline(extractor, ref, ref_other, real_features)}
    if fid_extractor is not None:
        bases["fid"] = _baseline(fid_extractor, ref, ref_other, fid_real_features)
    entries: dict[str, dict[str, Any]] = {}
    images: dict[str, np.ndarray] = {"reference": ref}
    for name, gen in variants.items():
        imgs = variant_images(gen, seeds, labels, batch)
        images[name] = imgs
        entry: dict[str, Any] = {"variant": name, "backend": gen.backend, "precision": gen.precision,
                                 "seeds": [0, n - 1]}
        # the runtime's uint8 output cannot hold NaN; a NaN in the raw graph output shows up as a wrong pixel
        entry.update(image_parity(ref, imgs, nonfinite=0))
        for prefix, base in bases.items():
            entry.update(_fd_figures(prefix, base, imgs))
        entries[name] = entry
        if progress:
            progress()
    return entries, images
