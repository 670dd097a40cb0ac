"""Convolutional VAE (Kingma & Welling 2014); conditional (CVAE) when the data has labels.

The decoder is the generator: ``z [+ label embedding] -> image in [-1, 1]`` with the same
``forward(z, labels=None, truncation=None)`` as every GAN generator, so a VAE goes through the same
checkpoint -> export -> bundle -> runtime -> bench path.

Checkpoint layout: the decoder under ``G.`` (and ``G_ema.``), the encoder under ``D.`` -- the family's
``build_discriminator`` builds the encoder, so a checkpoint's D slot rebuilds from its spec like any
other family's. The encoder returns ``(mu, logvar)``, not logits; it is only used by the VAE trainer
(``ganrt.train.vae``), which optimizes the negative ELBO with a KL warm-up.

Decoder: linear -> 4x4 -> [ConvTranspose(4, 2, 1) -> BN -> LeakyReLU] per level -> conv3x3 -> tanh.
Encoder: [conv(4, 2, 1) -> BN -> LeakyReLU] per level -> flatten [+ label embedding] -> linear -> mu, logvar.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register
from ganrt.models.layers import doubling_levels, level_channels


class VAEDecoder(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, num_classes: int = 0, width: int = 32,
                 max_width: int = 256, embed_dim: int = 16) -> None:
        super().__init__()
        levels = doubling_levels(resolution, "VAE")
        ch = [level_channels(i, levels, width, max_width) for i in range(levels + 1)]
        self.ch0 = ch[0]
        self.num_classes = num_classes
        in_dim = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
            in_dim += embed_dim
        self.input = nn.Linear(in_dim, ch[0] * 16)
        layers: list[nn.Module] = []
        for i in range(levels):
            layers += [nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i + 1]),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(ch[-1], channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, self.embed(labels)], dim=1)
        x = F.leaky_relu(self.input(z), 0.2).unflatten(1, (self.ch0, 4, 4))  # (B, ch0, 4, 4)
        return self.net(x)  # (B, C, H, W) in [-1, 1]


class VAEEncoder(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, num_classes: int = 0, width: int = 32,
                 max_width: int = 256, embed_dim: int = 16) -> None:
        super().__init__()
        levels = doubling_levels(resolution, "VAE")
        ch = [level_channels(i, levels, width, max_width) for i in range(levels + 1)]
        layers: list[nn.Module] = []
        in_ch = channels
        for level in range(levels, 0, -1):
            layers += [nn.Conv2d(in_ch, ch[level - 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[level - 1]),
                       nn.LeakyReLU(0.2)]
            in_ch = ch[level - 1]
        self.net = nn.Sequential(*layers)  # (B, ch0, 4, 4)
        self.num_classes = num_classes
        feat = ch[0] * 16
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
            feat += embed_dim
        self.mu = nn.Linear(feat, latent_dim)
        self.logvar = nn.Linear(feat, latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x).flatten(1)
        if self.num_classes:
            h = torch.cat([h, self.embed(labels)], dim=1)
        return self.mu(h), self.logvar(h).clamp(-30.0, 20.0)  # (B, latent_dim) each


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample, summed over latent dims: (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


GENERATOR_KWARGS = ("width", "max_width", "embed_dim")


def _kwargs(spec) -> dict:
    unknown = set(spec.arch_kwargs) - set(GENERATOR_KWARGS)
    if unknown:
        raise ValueError(f"unknown vae arch_kwargs {sorted(unknown)}; known: {list(GENERATOR_KWARGS)}")
    if spec.height != spec.width:
        raise ValueError("the VAE needs square images")
    return dict(spec.arch_kwargs)


def build_generator(spec) -> VAEDecoder:
    """The decoder (z -> image), the part that is exported and served."""
    return VAEDecoder(spec.latent_dim, spec.channels, spec.height, num_classes=spec.num_classes, **_kwargs(spec))


def build_discriminator(spec, **_ignored) -> VAEEncoder:
    """The encoder (stored under ``D.`` in checkpoints): image -> (mu, logvar)."""
    return VAEEncoder(spec.latent_dim, spec.channels, spec.height, num_classes=spec.num_classes, **_kwargs(spec))


def default_kwargs(resolution: int) -> dict:
    return {"width": 32, "max_width": 256, "embed_dim": 16}


register(ModelFamily(
    name="vae",
    description="Convolutional VAE (conditional when labelled); the decoder is the exported generator",
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    default_kwargs=default_kwargs,
    supported_resolutions=(16, 32, 64, 128),
    trainer="ganrt.train.vae:VAETrainer",
    default_loss="elbo",
))
