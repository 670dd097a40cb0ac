"""Training: datasets, losses, regularizers, EMA, the loop and sample grids (``ganrt train``).

``ganrt.train.train(config, out_dir, resume=False)`` runs a ``TrainConfig``; families plug in their own
objective through ``ganrt.train.trainer.Trainer``. Importing this package does not import torch: the
names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "ganrt.train.config",
    "train": "ganrt.train.loop",
    "TrainResult": "ganrt.train.loop",
    "Trainer": "ganrt.train.trainer",
    "AdversarialTrainer": "ganrt.train.trainer",
    "Batch": "ganrt.train.trainer",
    "load_dataset": "ganrt.train.datasets",
    "ImageDataset": "ganrt.train.datasets",
    "PRESETS": "ganrt.train.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ganrt.train' has no attribute {name!r}")
