"""Named option sets for ``ganrt train --preset NAME``; explicit command-line options override them."""

from __future__ import annotations

from typing import Any

# name -> (one-line description, TrainConfig fields)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "demo": (
        "conditional DCGAN on the built-in MNIST digits at 32x32; a few minutes on 2 CPU cores",
        {"arch": "dcgan", "dataset": "mnist", "resolution": 32, "conditional": "on", "steps": 1000,
         "batch_size": 64, "width": 32, "latent_dim": 64, "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999),
         # measured: hinge + spectral norm learns far slower here; lazy R1 keeps D from overpowering G early
         "loss": "nonsaturating", "spectral_norm": False, "r1_gamma": 1.0, "r1_every": 4,
         "ema_decay": 0.995, "ema_start": 200, "sample_every": 250, "checkpoint_every": 250, "log_every": 25},
    ),
    "smoke": (
        "a seconds-long run with tiny widths, to check an installation or a dataset",
        {"steps": 20, "batch_size": 16, "width": 8, "latent_dim": 16, "sample_every": 10, "checkpoint_every": 10,
         "log_every": 5, "ema_start": 0},
    ),
}
