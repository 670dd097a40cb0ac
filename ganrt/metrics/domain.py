"""The domain feature extractor: a small CNN classifier that ganrt trains on the dataset itself.

Where the FID Inception network is unavailable or meaningless (28x28 digits are far from ImageNet), a
classifier trained on the generator's own data gives features that separate what matters there. Numbers
computed with it are FD-domain / KID-domain / IS-domain: comparable between runs that use the same
classifier file (its sha256 is recorded), never with published FIDs.

File format: one ``.safetensors`` file, tensors of :class:`DomainClassifier`, metadata key ``ganrt`` =
JSON ``{"format": "ganrt.classifier", "format_version": 1, "config": {channels, resolution, num_classes,
width, feature_dim}, "dataset": {identity}, "test_accuracy": float, "train": {...}, "created": str}``.
No pickle: loading never runs code.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import MetricError
from ganrt.fileio import load_tensors_json, save_tensors_json, sha256_file
from ganrt.metrics.extractors import FeatureExtractor, to_float_nchw

FORMAT = "ganrt.classifier"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassifierConfig:
    channels: int
    resolution: int
    num_classes: int
    width: int = 16
    feature_dim: int = 128


def build_classifier(config: ClassifierConfig):
    import torch
    from torch import nn

    class DomainClassifier(nn.Module):
        """(conv-BN-ReLU x2, pool) x2, conv-BN-ReLU, global average pool -> features (B, F) -> logits (B, K)."""

        def __init__(self, c: ClassifierConfig) -> None:
            super().__init__()
            w = c.width
            def block(cin: int, cout: int) -> list[nn.Module]:
                return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

            self.body = nn.Sequential(
                *block(c.channels, w), *block(w, w), nn.MaxPool2d(2),  # (B, w, R/2, R/2)
                *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, R/4, R/4)
                *block(2 * w, 4 * w),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
            )
            self.features = nn.Sequential(nn.Linear(4 * w, c.feature_dim), nn.ReLU())
            self.head = nn.Linear(c.feature_dim, c.num_classes)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, R, R) in [-1, 1]
            f = self.features(self.body(x))
            return f, self.head(f)

    return DomainClassifier(config)


def _as_input(images_u8, config: ClassifierConfig):
    """uint8 (B, H, W, C) torch tensor -> (B, channels, R, R) float in [-1, 1]."""
    return to_float_nchw(images_u8, config.channels, config.resolution) * 2 - 1


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *, epochs: int = 4,
                     batch_size: int = 64, lr: float = 2e-3, width: int = 16, test_fraction: float = 0.1,
                     seed: int = 0, progress: Callable[[int], None] | None = None) -> tuple[Any, ClassifierConfig,
                                                                                           dict[str, Any]]:
    """Train on uint8 (N, H, W, C) images with labels; hold out ``test_fraction`` (stratified by a seeded
    shuffle) to report accuracy. Returns (model in eval mode, config, report {test_accuracy, ...}).

    ``progress(n)`` is called after each batch with the number of images it held.
    """
    import torch
    import torch.nn.functional as F

    images = np.asarray(images)
    if labels is None or num_classes < 2:
        raise MetricError("the domain classifier needs a labelled dataset with at least 2 classes; for unlabelled "
                          "data use --extractor inception (or pixels for parity only)")
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise MetricError(f"training the classifier needs uint8 images (N, H, W, C) and N labels, got "
                          f"{images.dtype} {images.shape} and {len(labels)} labels")
    n = len(images)
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < batch_size:
        raise MetricError(f"{n} images are too few to train a classifier (need more than {batch_size + n_test})")
    config = ClassifierConfig(channels=int(images.shape[3]), resolution=int(images.shape[1]),
                              num_classes=int(num_classes), width=width)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    model = build_classifier(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * (len(train_idx) // batch_size))
    x_all = torch.from_numpy(np.ascontiguousarray(images))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    losses = []
    model.train()
    for _ in range(epochs):
        perm = rng.permutation(train_idx)
        for s in range(0, len(perm) - batch_size + 1, batch_size):
            idx = torch.from_numpy(perm[s:s + batch_size])
            x = _as_input(x_all[idx], config)
            # light augmentation: random shifts of up to 2 pixels, so features do not hinge on exact position
            dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            _, logits = model(x)
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(batch_size)
    model.eval()
    with torch.inference_mode():
        correct = 0
        for s in range(0, n_test, 256):
            idx = torch.from_numpy(test_idx[s:s + 256])
            _, logits = model(_as_input(x_all[idx], config))
            correct += int((logits.argmax(1) == y_all[idx]).sum())
    report = {"test_accuracy": correct / n_test, "n_train": int(len(train_idx)), "n_test": int(n_test),
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
              "final_loss": float(np.mean(losses[-20:])) if losses else None}
    return model, config, report


def save_classifier(path: str | os.PathLike, model, config: ClassifierConfig, *, dataset: dict[str, Any],
                    report: dict[str, Any]) -> Path:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(config), "dataset": dataset,
            "test_accuracy": report.get("test_accuracy"), "train": report,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_tensors_json(path, tensors, meta)


def load_classifier(path: str | os.PathLike) -> tuple[Any, ClassifierConfig, dict[str, Any]]:
    """(model in eval mode, config, metadata) from a file written by :func:`save_classifier`."""
    path = Path(path)
    if not path.is_file():
        raise MetricError(f"classifier file {path} does not exist; make one with "
                          "`ganrt train-classifier --dataset DATA --out clf.safetensors`")
    try:
        tensors, raw = load_tensors_json(path)
    except Exception as e:  # safetensors raises its own types for foreign or torn files
        raise MetricError(f"{path} is not a readable safetensors file ({e}); classifiers are written by "
                          "`ganrt train-classifier`") from None
    try:
        meta = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MetricError(f"{path} is not a ganrt classifier (no '{FORMAT}' metadata); make one with "
                          "`ganrt train-classifier`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise MetricError(f"{path}: classifier format version {meta.get('format_version')} is not supported "
                          f"(this ganrt reads {FORMAT_VERSION}); retrain it with `ganrt train-classifier`")
    try:
        config = ClassifierConfig(**meta["config"])
        model = build_classifier(config)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise MetricError(f"{path}: classifier weights do not match its recorded config ({first})") from None
    return model.eval(), config, meta


class DomainExtractor(FeatureExtractor):
    name, label, has_logits = "domain", "-domain", True

    def __init__(self, model, config: ClassifierConfig, meta: dict[str, Any], sha256: str, path: str) -> None:
        self.model, self.config, self.meta, self.sha256, self.path = model, config, meta, sha256, path
        self.feature_dim = config.feature_dim

    @classmethod
    def from_file(cls, path: str | os.PathLike | None) -> "DomainExtractor":
        if not path:
            raise MetricError("the 'domain' extractor needs --classifier clf.safetensors")
        model, config, meta = load_classifier(path)
        return cls(model, config, meta, sha256_file(path), str(path))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.sha256, "config": asdict(self.config),
                "trained_on": (self.meta.get("dataset") or {}).get("sha256"),
                "test_accuracy": self.meta.get("test_accuracy"),
                "resize": f"bilinear (antialiased when shrinking) to {self.config.resolution}"}

    def _forward(self, x):
        return self.model(_as_input(x, self.config))
