"""DCGAN (Radford et al. 2016) and its class-conditional form (cGAN).

G: z (+ label embedding) -> 4x4 by a transposed conv, then stride-2 ConvTranspose(k=4, p=1) + BN + ReLU
blocks up to the resolution, tanh. D: stride-2 convs + LeakyReLU (spectral norm optional), an optional
minibatch-stddev channel against mode collapse, optional minibatch discrimination features (Salimans et al.
2016), a linear head plus a projection term for labels (Miyato & Koyama 2018) when conditional.
"""

from __future__ import annotations

import torch
from torch import nn

from ganrt.models import ModelFamily, register
from ganrt.models.layers import MinibatchDiscrimination, MinibatchStdDev, doubling_levels, maybe_spectral_norm


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, width: int = 64,
                 num_classes: int = 0, embed_dim: int = 32) -> None:
        super().__init__()
        ups = doubling_levels(resolution, "DCGAN")
        self.num_classes = num_classes
        in_dim = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
            in_dim += embed_dim
        ch = [min(width * 2 ** (ups - 1 - i), width * 8) for i in range(ups)]  # e.g. 256,128,64 for ups=3
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch[0], 4, 1, 0, bias=False),  # (B, ch0, 4, 4)
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(inplace=True),
        ]
        for i in range(ups - 1):
            layers += [nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i + 1]),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])  # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False, minibatch_stddev: bool = True, mbstd_group: int = 4,
                 minibatch_discrimination: bool = False, mbd_kernels: int = 16) -> None:
        super().__init__()
        downs = doubling_levels(resolution, "DCGAN")
        sn = lambda m: maybe_spectral_norm(m, spectral_norm)  # noqa: E731
        ch = [min(width * 2**i, width * 8) for i in range(downs)]
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ch[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(downs - 1):
            layers += [sn(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)  # (B, ch[-1], 4, 4)
        self.mbstd = MinibatchStdDev(mbstd_group) if minibatch_stddev else None
        feat_ch = ch[-1] + (1 if minibatch_stddev else 0)
        self.features_out = sn(nn.Conv2d(feat_ch, ch[-1], 4, 1, 0))  # (B, ch[-1], 1, 1)
        self.mbd = MinibatchDiscrimination(ch[-1], mbd_kernels) if minibatch_discrimination else None
        self.head = sn(nn.Linear(ch[-1] + (mbd_kernels if minibatch_discrimination else 0), 1))
        self.num_classes = num_classes
        if num_classes:
            self.embed = sn(nn.Embedding(num_classes, ch[-1]))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        h = self.body(x)
        if self.mbstd is not None:
            h = self.mbstd(h)
        feats = nn.functional.leaky_relu(self.features_out(h).flatten(1), 0.2)  # (B, F)
        logits = self.head(self.mbd(feats) if self.mbd is not None else feats).squeeze(1)
        if self.num_classes:
            logits = logits + (self.embed(labels) * feats).sum(dim=1)  # projection discriminator
        return (logits, feats) if return_features else logits


def build_generator(spec) -> DCGANGenerator:
    if spec.height != spec.width:
        raise ValueError("DCGAN needs square images")
    kw = spec.arch_kwargs
    return DCGANGenerator(spec.latent_dim, spec.channels, spec.height, width=kw.get("width", 64),
                          num_classes=spec.num_classes, embed_dim=kw.get("embed_dim", 32))


def build_discriminator(spec, spectral_norm: bool = False, minibatch_stddev: bool = True,
                        minibatch_discrimination: bool = False, width: int | None = None,
                        **_ignored) -> DCGANDiscriminator:
    return DCGANDiscriminator(spec.channels, spec.height, width=width or spec.arch_kwargs.get("width", 64),
                              num_classes=spec.num_classes, spectral_norm=spectral_norm,
                              minibatch_stddev=minibatch_stddev, minibatch_discrimination=minibatch_discrimination)


register(ModelFamily(
    name="dcgan",
    description="DCGAN; class-conditional (label embedding in G, projection D) when the data has labels",
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    default_kwargs=lambda resolution: {"width": 64, "embed_dim": 32},
))
