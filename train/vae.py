"""The VAE trainer: negative ELBO with a KL warm-up.

Per image: ``||x - decoder(z)||^2 / (2 sigma^2) + beta * KL(q(z|x) || N(0, I))`` with z drawn by the
reparameterization trick, a Gaussian decoder of fixed sigma (images in [-1, 1]) and ``beta`` rising
linearly from 0 to 1 over the first part of the run (fixed when the run starts, kept in the resumable extra
state), which keeps the posterior from collapsing onto the prior early on.

``config.trainer_options``: ``recon_sigma`` (default ``RECON_SIGMA``; larger values weigh the KL term more,
so a conditional VAE leaves the class to the label instead of the latent) and ``kl_warmup`` (the warm-up
as a fraction of the run, default ``KL_WARMUP_FRACTION``).

The encoder sits in the trainer's ``D`` slot (checkpointed as ``D.``), the decoder in ``G`` / ``G_ema``:
the EMA decoder is sampled from the prior for the grid and is what gets exported.
"""

from __future__ import annotations

from typing import Any

import torch

from ganrt.errors import ConfigError
from ganrt.models.vae import kl_divergence
from ganrt.train.trainer import Batch, Trainer

RECON_SIGMA = 0.2
KL_WARMUP_FRACTION = 0.25


class VAETrainer(Trainer):
    OPTIONS = {"recon_sigma": RECON_SIGMA, "kl_warmup": KL_WARMUP_FRACTION}

    def __init__(self, config, spec, **kw: Any) -> None:
        super().__init__(config, spec, **kw)
        self.sigma = float(self.option("recon_sigma"))
        warmup = float(self.option("kl_warmup"))
        if not self.sigma > 0:
            raise ConfigError(f"trainer_options recon_sigma must be > 0, got {self.sigma}")
        if not 0.0 <= warmup <= 1.0:
            raise ConfigError(f"trainer_options kl_warmup must be a fraction of the run in [0, 1], got {warmup}")
        self.kl_warmup = max(1, int(config.steps * warmup))

    def discriminator_config(self) -> dict[str, Any]:
        return {}  # the encoder is rebuilt from the spec alone

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = list(self.G.parameters()) + list(self.D.parameters())
        return {"VAE": torch.optim.Adam(params, lr=self.config.lr_g, betas=self.config.betas)}

    def kl_weight(self, step: int) -> float:
        return min(1.0, (step + 1) / self.kl_warmup)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        x, labels = batch.images, batch.labels
        with self.autocast():
            mu, logvar = self.D_train(x, labels)
            mu, logvar = mu.float(), logvar.float()
            z = mu + self.randn(*mu.shape) * torch.exp(0.5 * logvar)
            decoded = self.G_train(z, labels).float()
        recon = (decoded - x).square().flatten(1).sum(dim=1).mean() / (2 * self.sigma**2)
        kl = kl_divergence(mu, logvar).mean()
        beta = self.kl_weight(step)
        loss = recon + beta * kl
        self.optimize("VAE", loss)
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item(), "beta": beta}

    def extra_state(self) -> dict[str, Any]:
        return {"kl_warmup": self.kl_warmup}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kl_warmup = int(state.get("kl_warmup", self.kl_warmup))
