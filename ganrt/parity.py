"""Pixel parity between a variant's images and the reference's, in uint8 levels.

Used by export verification and by the benchmark's fidelity report, so both speak the same figures.
"""

from __future__ import annotations

import numpy as np


def image_parity(reference: np.ndarray, variant: np.ndarray, *, nonfinite: int = 0) -> dict:
    """Compare two uint8 (or float, already in 0..255) image batches of the same shape.

    Returns max |diff| and mean |diff| in levels, the fraction of values off by more than one level,
    PSNR over the whole batch and the worst per-image PSNR (dB, inf when identical), and ``nonfinite``
    (NaN/Inf count the caller saw in the raw output before the cast).
    """
    ref = np.asarray(reference, dtype=np.float64)
    var = np.asarray(variant, dtype=np.float64)
    if ref.shape != var.shape:
        raise ValueError(f"parity needs equal shapes, got {ref.shape} and {var.shape}")
    diff = np.abs(ref - var)
    per_image_mse = diff.reshape(diff.shape[0], -1) ** 2
    per_image_mse = per_image_mse.mean(axis=1)
    mse = float(per_image_mse.mean())
    per_image_psnr = [psnr_from_mse(m) for m in per_image_mse]
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "frac_gt_1": float((diff > 1.0).mean()) if diff.size else 0.0,
        "psnr_db": psnr_from_mse(mse),
        "min_image_psnr_db": float(min(per_image_psnr)) if per_image_psnr else float("inf"),
        "nonfinite": int(nonfinite),
        "n_images": int(ref.shape[0]),
    }


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    return float("inf") if mse <= 0 else float(10.0 * np.log10(peak * peak / mse))


def json_safe(value):
    """Replace inf/nan floats by strings so the result is strict JSON ('inf' PSNR means identical)."""
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
