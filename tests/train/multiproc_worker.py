"""A torchrun worker for the multi-process tests: several short runs in one process group (one start-up).

    python -m torch.distributed.run --standalone --nproc-per-node 2 multiproc_worker.py OUT DATASET

Runs every job of ``jobs(dataset)`` into ``OUT/<name>`` with ``ganrt.train.loop.train``; a job that is
expected to fail writes the error to ``OUT/<name>.error`` instead. Not a test module: pytest starts it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

from ganrt.errors import GanrtError
from ganrt.train.config import TrainConfig
from ganrt.train.trainer import Trainer

TINY_KWARGS = {"dcgan": {"embed_dim": 4},
               "stylegan": {"w_dim": 8, "mapping_layers": 1, "max_width": 8, "embed_dim": 4},
               "biggan": {"max_width": 8, "shared_dim": 4, "attn_resolution": 8},
               "progan": {"max_width": 8, "embed_dim": 4},
               "vae": {"max_width": 8, "embed_dim": 4},
               "flatgan": {"embed_dim": 4}, "meanmatch": {"embed_dim": 4}}


class FlatGenerator(nn.Module):
    """A generator without batch statistics (no BatchNorm): linear -> 3 x (transposed conv, LeakyReLU)."""

    def __init__(self, latent_dim: int, channels: int, num_classes: int, width: int = 4, embed_dim: int = 4):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.fc = nn.Linear(latent_dim + (embed_dim if num_classes else 0), width * 16)
        self.net = nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.ConvTranspose2d(width, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z, labels=None, truncation=None):
        if self.num_classes:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(self.fc(z).unflatten(1, (self.width, 4, 4)))  # (B, C, 32, 32)


class MeanMatchTrainer(Trainer):
    """Updates G through ``self.G``, not ``self.G_train``: its ranks drift apart, which the loop must catch."""

    def build_models(self):
        return self.family.build_generator(self.spec), None

    def step(self, batch, step):
        fake = self.G(self.randn(batch.images.shape[0], self.spec.latent_dim), batch.labels)
        loss = (fake.mean(0) - batch.images.mean(0)).square().mean()
        self.optimize("G", loss)
        return {"loss": loss.item()}


def register_test_families() -> None:
    """``flatgan``: the adversarial trainer on a batch-statistics-free G and DCGAN's D; ``meanmatch``."""
    from ganrt import models

    dcgan = models.get("dcgan")
    models.register(dataclasses.replace(
        dcgan, name="flatgan", build_generator=lambda spec: FlatGenerator(
            spec.latent_dim, spec.channels, spec.num_classes, spec.arch_kwargs.get("width", 4),
            spec.arch_kwargs.get("embed_dim", 4))))
    models.register(dataclasses.replace(dcgan, name="meanmatch", trainer=f"{__name__}:MeanMatchTrainer"))


def config(arch: str, dataset: str, **changes) -> TrainConfig:
    resolution = 32 if arch in ("dcgan", "flatgan", "meanmatch") else 16
    base = dict(arch=arch, dataset=dataset, resolution=resolution, steps=4, batch_size=8, width=4, latent_dim=8,
                arch_kwargs=TINY_KWARGS[arch], sample_every=2, checkpoint_every=2, log_every=1, sample_columns=2,
                threads=1)
    base.update(changes)
    return TrainConfig(**base)


# The run the resume and fault tests compare with: progan without batch statistics, 60 steps. The same as
# ``ganrt train`` with REFERENCE_ARGS (the tests check that the two agree).
REFERENCE_ARGS = ["--arch", "progan", "--resolution", "16", "--batch-size", "8", "--width", "4", "--latent-dim", "8",
                  "--no-minibatch-stddev", "--checkpoint-every", "5", "--sample-every", "30", "--log-every", "10",
                  "--threads", "1", "--steps", "60"]


def reference_config(dataset: str) -> TrainConfig:
    return TrainConfig(arch="progan", dataset=dataset, resolution=16, batch_size=8, width=4, latent_dim=8,
                       minibatch_stddev=False, checkpoint_every=5, sample_every=30, log_every=10, threads=1, steps=60)


def jobs(dataset: str) -> dict[str, TrainConfig]:
    """name -> config. ``family-*``: every trainer with its stateful features; ``equal-*``: one step of a
    configuration without batch statistics (compared with one process and the whole batch)."""
    return {
        "reference": reference_config(dataset),
        "family-dcgan": config("dcgan", dataset, r1_gamma=1.0, r1_every=2, diffaugment="color,translation,cutout",
                               feature_matching=0.5, ema_start=1, ema_decay=0.9),
        "family-stylegan": config("stylegan", dataset),
        "family-biggan": config("biggan", dataset),
        "family-progan": config("progan", dataset, steps=10, checkpoint_every=5, sample_every=5),  # grows, fades in
        "family-vae": config("vae", dataset),
        "equal-flatgan": config("flatgan", dataset, steps=1, minibatch_stddev=False, r1_gamma=1.0, r1_every=1,
                                diffaugment="color,translation,cutout", lr_g=1e-3, lr_d=1e-3),
        "equal-progan": config("progan", dataset, steps=1, minibatch_stddev=False, lr_g=1e-3, lr_d=1e-3),
        "diverge-meanmatch": config("meanmatch", dataset, steps=2, checkpoint_every=1),
    }


def main(out: Path, dataset: str) -> None:
    import torch.distributed as dist

    from ganrt.train.loop import train

    register_test_families()
    dist.init_process_group("gloo")  # once for all jobs; train() joins the running group
    try:
        for name, cfg in jobs(dataset).items():
            try:
                train(cfg, out / name, progress=False)
            except GanrtError as e:
                if dist.get_rank() == 0:
                    (out / f"{name}.error").write_text(str(e))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
