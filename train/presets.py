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
    # --- the model zoo: one short run per family on the built-in digits (times: 2 shared CPU cores, --threads 1)
    "stylegan-demo": (
        "conditional StyleGAN2-style G on the built-in MNIST digits at 32x32; about 5-7 minutes on 2 CPU cores",
        {"arch": "stylegan", "dataset": "mnist", "resolution": 32, "conditional": "on", "steps": 600,
         "batch_size": 32, "latent_dim": 64, "lr_g": 2e-3, "lr_d": 2e-3, "betas": (0.0, 0.99),
         "loss": "nonsaturating", "r1_gamma": 1.0, "r1_every": 4,
         # measured: the paper's mapping lr multiplier 0.01 leaves the mapping (and so the label) nearly frozen
         # in a run this short; 0.1 lets the label in
         "arch_kwargs": {"w_dim": 64, "mapping_layers": 2, "mapping_lr_mul": 0.1, "width": 16, "max_width": 64,
                         "embed_dim": 32, "mixing_prob": 0.5},
         "ema_decay": 0.99, "ema_start": 100, "sample_every": 100, "checkpoint_every": 300, "log_every": 25},
    ),
    "biggan-demo": (
        "conditional BigGAN-style G on the built-in MNIST digits at 32x32; about 5 minutes on 2 CPU cores",
        {"arch": "biggan", "dataset": "mnist", "resolution": 32, "conditional": "on", "steps": 500,
         "batch_size": 64, "latent_dim": 64, "lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99),
         # measured: hinge at lr 2e-4/4e-4 gave black images at 200 steps, and a spectrally normalized D stalled
         # with outputs near 0 (one stroke per class). G keeps BigGAN's features (shared-embedding conditional
         # BN, z chunks, attention at 16x16, spectral norm); D drops spectral norm for lazy R1 as in "demo" --
         # digits in every row by step 400, cleaner by 500 (272 s, --threads 1); little variety within a row
         "loss": "nonsaturating", "spectral_norm": False, "r1_gamma": 1.0, "r1_every": 4, "minibatch_stddev": True,
         "arch_kwargs": {"width": 8, "max_width": 64, "shared_dim": 16, "attn_resolution": 16},
         "ema_decay": 0.99, "ema_start": 100, "sample_every": 50, "checkpoint_every": 200, "log_every": 25},
    ),
    "progan-demo": (
        "conditional progressive GAN on the built-in MNIST digits, growing 8x8 -> 32x32; about 4 minutes on 2 "
        "CPU cores",
        {"arch": "progan", "dataset": "mnist", "resolution": 32, "conditional": "on", "steps": 900,
         "batch_size": 32, "latent_dim": 64, "lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99),
         # measured: growing from 4x4 in a few hundred steps gave grey squares; starting at 8x8 leaves 180-step
         # phases, and non-saturating + lazy R1 learns faster than WGAN-GP in a run this short
         "loss": "nonsaturating", "r1_gamma": 1.0, "r1_every": 4, "trainer_options": {"start_stage": 1},
         "arch_kwargs": {"width": 16, "max_width": 64, "embed_dim": 16},
         "ema_decay": 0.99, "ema_start": 100, "sample_every": 150, "checkpoint_every": 450, "log_every": 25},
    ),
    "vae-demo": (
        "conditional VAE on the built-in MNIST digits at 32x32; about 3 minutes on 2 CPU cores",
        {"arch": "vae", "dataset": "mnist", "resolution": 32, "conditional": "on", "steps": 1000,
         "batch_size": 64, "width": 16, "latent_dim": 16, "lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.9, 0.999),
         # measured: sigma 0.2 / latent 32 put the class into z (rows ignored their label); sigma 0.5 and a
         # 16-d latent leave the class to the label
         "trainer_options": {"recon_sigma": 0.5, "kl_warmup": 0.2},
         "ema_decay": 0.99, "ema_start": 0, "sample_every": 250, "checkpoint_every": 250, "log_every": 50},
    ),
    "smoke": (
        "a seconds-long run with tiny widths, to check an installation or a dataset",
        {"steps": 20, "batch_size": 16, "width": 8, "latent_dim": 16, "sample_every": 10, "checkpoint_every": 10,
         "log_every": 5, "ema_start": 0},
    ),
}
