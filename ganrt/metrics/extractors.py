"""Feature extractors and their validating registry.

A feature extractor maps uint8 images (N, H, W, C) to float64 features (N, F) and, when it is a classifier,
logits (N, K) for the Inception Score. Each one names itself (``identity()``: everything that changes its
output, e.g. the weights' sha256 and the resize), which keys the reference-statistics cache and is recorded
in every result. Its ``label`` prefixes the metric names, so numbers from a domain classifier read
``FD-domain`` and are never mistaken for a published FID.

    name        weights                                      metric labels
    domain      a classifier trained by ``ganrt train-classifier``  FD-domain, KID-domain, IS-domain
    inception   the FID Inception-v3 (2015-12-05), local file     FID, KID, IS
    pixels      none: a fixed random projection of the pixels     FD-pixels, KID-pixels (no IS)

Nothing is downloaded: weights come from files the user names.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganrt.errors import MetricError


class FeatureExtractor:
    """Base: subclasses set ``name``, ``label``, ``feature_dim`` and implement ``_forward`` on a torch batch."""

    name: str = ""
    label: str = ""  # metric-name suffix: "" for inception (FID), "-domain", "-pixels"
    feature_dim: int = 0
    has_logits: bool = False

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def _forward(self, x):  # x: (B, H, W, C) uint8 torch tensor -> (features (B, F), logits (B, K) | None)
        raise NotImplementedError

    def metric_names(self) -> dict[str, str]:
        if self.name == "inception":
            return {"fd": "FID", "kid": "KID", "is": "IS"}
        return {"fd": f"FD{self.label}", "kid": f"KID{self.label}", "is": f"IS{self.label}"}

    def extract(self, images: np.ndarray, *, batch_size: int = 64,
                progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(features (N, F) float64, logits (N, K) float64 or None) of uint8 (N, H, W, C) images.

        Deterministic and independent of ``batch_size`` (eval mode, no batch statistics).
        """
        import torch

        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3):
            raise MetricError(f"feature extraction needs uint8 images (N, H, W, C) with C 1 or 3, got "
                              f"{images.dtype} {images.shape}")
        feats, logits = [], []
        with torch.inference_mode():
            for s in range(0, images.shape[0], batch_size):
                f, lg = self._forward(torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])))
                feats.append(f.double().numpy())
                if lg is not None:
                    logits.append(lg.double().numpy())
                if progress is not None:
                    progress(min(batch_size, images.shape[0] - s))
        features = np.concatenate(feats) if feats else np.zeros((0, self.feature_dim))
        return features, (np.concatenate(logits) if logits else None)


def to_float_nchw(x, channels: int, size: int | None, *, antialias: bool = True, align_corners: bool = False):
    """uint8 (B, H, W, C) torch tensor -> float32 (B, channels, size, size) in [0, 1].

    Gray -> RGB repeats the channel; RGB -> gray takes ITU-R 601 luma. Resize is bilinear.
    """
    import torch
    import torch.nn.functional as F

    x = x.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners,
                          antialias=antialias and x.shape[2] > size)
    return x


class PixelProjection(FeatureExtractor):
    """Fallback with no weights: images resized to 32x32 gray in [-1, 1], projected by a fixed random
    Gaussian matrix (seed 0) to 64 dimensions. Sensitive to pixel changes, blind to semantics; use it for
    parity between variants of one generator, not to judge a generator's quality."""

    name, label, feature_dim = "pixels", "-pixels", 64
    SIZE = 32

    def __init__(self) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.projection = torch.randn(self.SIZE * self.SIZE, self.feature_dim, generator=g) / self.SIZE

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "projection": f"gaussian seed 0, {self.SIZE * self.SIZE}->{self.feature_dim}",
                "resize": f"bilinear antialiased to {self.SIZE}x{self.SIZE}, gray"}

    def _forward(self, x):
        x = to_float_nchw(x, 1, self.SIZE) * 2 - 1
        return x.flatten(1) @ self.projection, None


@dataclass(frozen=True)
class ExtractorEntry:
    factory: Callable[..., FeatureExtractor]
    needs: str | None  # the option that must be given ("classifier", "inception_weights") or None
    description: str


def _domain(classifier: str | os.PathLike | None = None, **_: Any) -> FeatureExtractor:
    from ganrt.metrics.domain import DomainExtractor

    return DomainExtractor.from_file(classifier)


def _inception(inception_weights: str | os.PathLike | None = None, **_: Any) -> FeatureExtractor:
    from ganrt.metrics.inception import InceptionExtractor

    return InceptionExtractor.from_file(inception_weights)


EXTRACTORS: dict[str, ExtractorEntry] = {
    "domain": ExtractorEntry(_domain, "classifier", "small CNN trained by `ganrt train-classifier` (FD-domain)"),
    "inception": ExtractorEntry(_inception, None, "FID Inception-v3 2015-12-05 from a local safetensors file (FID)"),
    "pixels": ExtractorEntry(lambda **_: PixelProjection(), None, "fixed random projection of pixels (FD-pixels)"),
}


def get_extractor(name: str, *, classifier: str | os.PathLike | None = None,
                  inception_weights: str | os.PathLike | None = None) -> FeatureExtractor:
    """Build the extractor ``name``; a clear MetricError for an unknown name or a missing weights file."""
    entry = EXTRACTORS.get(name)
    if entry is None:
        raise MetricError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    if entry.needs == "classifier" and not classifier:
        raise MetricError("the 'domain' extractor needs a classifier file: pass --classifier clf.safetensors "
                          "(make one with `ganrt train-classifier --dataset DATA --out clf.safetensors`)")
    return entry.factory(classifier=classifier, inception_weights=inception_weights)
