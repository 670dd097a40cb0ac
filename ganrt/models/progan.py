"""Progressive GAN (Karras et al. 2018): grows from 4x4 to the target resolution, fading each new block in.

G: pixel-normalized z [+ label embedding] -> equalized-lr linear to 4x4 -> conv3x3, then per level
nearest x2 -> conv3x3 -> conv3x3, every conv followed by LeakyReLU(0.2) and pixelwise feature
normalization; a 1x1 ToRGB per level. D mirrors it (FromRGB per level, conv3x3 -> conv3x3 -> avgpool),
ending with minibatch stddev, conv3x3, conv4x4, linear (+ projection when conditional).

Growth state lives in two plain attributes, ``stage`` (how many up-blocks run: 0 = 4x4 .. ``levels`` = full
resolution) and ``alpha`` (fade-in weight of the newest block, 0..1): the output of G at stage s is
``lerp(upsample(ToRGB_{s-1}(x_{s-1})), ToRGB_s(x_s), alpha)`` at 4 * 2**s pixels, and D reads that
resolution. They are set by the progressive trainer (``ganrt.train.progan``) and are not weights: a
generator built from a spec (what is checkpointed, exported and served) runs the full resolution,
``stage = levels, alpha = 1``, with no fade-in branch in its graph.

Output is linear while training (as in the paper) and clamped to [-1, 1] in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register, square_generator_kwargs
from ganrt.models.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchDiscrimination,
    MinibatchStdDev,
    PixelNorm,
    doubling_levels,
    level_channels,
)


class ConvAct(nn.Module):
    """Equalized conv -> LeakyReLU(0.2) [-> pixel norm]."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 3, pixel_norm: bool = True, padding: int | None = None):
        super().__init__()
        self.conv = EqualizedConv2d(in_ch, out_ch, k, padding=padding)
        self.norm = PixelNorm() if pixel_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.leaky_relu(self.conv(x), 0.2))


class ProGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, num_classes: int = 0, width: int = 32,
                 max_width: int = 256, embed_dim: int = 32) -> None:
        super().__init__()
        self.levels = doubling_levels(resolution, "ProGAN")
        self.stage = self.levels  # full resolution unless a trainer says otherwise
        self.alpha = 1.0
        self.num_classes = num_classes
        ch = [level_channels(i, self.levels, width, max_width) for i in range(self.levels + 1)]
        self.ch0 = ch[0]
        in_dim = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
            nn.init.normal_(self.embed.weight)
            in_dim += embed_dim
        self.pixel_norm = PixelNorm()
        self.input = EqualizedLinear(in_dim, ch[0] * 16)
        self.conv4 = ConvAct(ch[0], ch[0])
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvAct(ch[i], ch[i + 1]), ConvAct(ch[i + 1], ch[i + 1])) for i in range(self.levels)
        )
        self.to_rgb = nn.ModuleList(EqualizedConv2d(ch[i], channels, 1) for i in range(self.levels + 1))

    def set_growth(self, stage: int, alpha: float) -> None:
        if not 0 <= stage <= self.levels or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"stage must be in [0, {self.levels}] and alpha in [0, 1], got {stage}, {alpha}")
        self.stage, self.alpha = int(stage), float(alpha)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pixel_norm(z)
        if self.num_classes:
            x = torch.cat([x, self.pixel_norm(self.embed(labels))], dim=1)
        x = self.pixel_norm(F.leaky_relu(self.input(x), 0.2).unflatten(1, (self.ch0, 4, 4)))  # (B, ch0, 4, 4)
        x = self.conv4(x)
        prev = x
        for i in range(self.stage):
            prev = x
            x = self.blocks[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        img = self.to_rgb[self.stage](x)
        if self.stage > 0 and self.alpha < 1.0:  # fade-in of the newest block
            low = F.interpolate(self.to_rgb[self.stage - 1](prev), scale_factor=2.0, mode="nearest")
            img = torch.lerp(low, img, self.alpha)
        return img if self.training else img.clamp(-1.0, 1.0)


class ProGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int = 0, width: int = 32, max_width: int = 256,
                 minibatch_stddev: bool = True, mbstd_group: int = 4, minibatch_discrimination: bool = False,
                 mbd_kernels: int = 16) -> None:
        super().__init__()
        self.levels = doubling_levels(resolution, "ProGAN")
        self.stage = self.levels
        self.alpha = 1.0
        ch = [level_channels(i, self.levels, width, max_width) for i in range(self.levels + 1)]
        self.from_rgb = nn.ModuleList(EqualizedConv2d(channels, ch[i], 1) for i in range(self.levels + 1))
        # blocks[i]: level i+1 -> level i
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvAct(ch[i + 1], ch[i + 1], pixel_norm=False), ConvAct(ch[i + 1], ch[i], pixel_norm=False),
                          nn.AvgPool2d(2))
            for i in range(self.levels)
        )
        self.mbstd = MinibatchStdDev(mbstd_group) if minibatch_stddev else None
        self.conv = ConvAct(ch[0] + (1 if minibatch_stddev else 0), ch[0], pixel_norm=False)
        self.conv_4x4 = ConvAct(ch[0], ch[0], k=4, pixel_norm=False, padding=0)  # (B, ch0, 1, 1)
        self.mbd = MinibatchDiscrimination(ch[0], mbd_kernels) if minibatch_discrimination else None
        self.head = EqualizedLinear(ch[0] + (mbd_kernels if minibatch_discrimination else 0), 1)
        self.num_classes = num_classes
        if num_classes:
            self.embed = nn.Embedding(num_classes, ch[0])

    def set_growth(self, stage: int, alpha: float) -> None:
        if not 0 <= stage <= self.levels or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"stage must be in [0, {self.levels}] and alpha in [0, 1], got {stage}, {alpha}")
        self.stage, self.alpha = int(stage), float(alpha)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        s = self.stage
        h = F.leaky_relu(self.from_rgb[s](x), 0.2)
        if s > 0:
            h = self.blocks[s - 1](h)
            if self.alpha < 1.0:  # fade-in: blend with the previous level's FromRGB of the downsampled image
                low = F.leaky_relu(self.from_rgb[s - 1](F.avg_pool2d(x, 2)), 0.2)
                h = torch.lerp(low, h, self.alpha)
            for i in range(s - 2, -1, -1):
                h = self.blocks[i](h)
        if self.mbstd is not None:
            h = self.mbstd(h)
        feats = self.conv_4x4(self.conv(h)).flatten(1)  # (B, ch0)
        logits = self.head(self.mbd(feats) if self.mbd is not None else feats).squeeze(1)
        if self.num_classes:  # projection discriminator
            logits = logits + (self.embed(labels) * feats).sum(dim=1) / math.sqrt(feats.shape[1])
        return (logits, feats) if return_features else logits


GENERATOR_KWARGS = ("width", "max_width", "embed_dim")


def build_generator(spec) -> ProGANGenerator:
    """The full-resolution generator (stage = levels, alpha = 1): what is exported and served."""
    kw = square_generator_kwargs(spec, "ProGAN", GENERATOR_KWARGS)
    return ProGANGenerator(spec.latent_dim, spec.channels, spec.height, num_classes=spec.num_classes,
                           **kw)


def build_discriminator(spec, minibatch_stddev: bool = True, minibatch_discrimination: bool = False,
                        width: int | None = None, **_ignored) -> ProGANDiscriminator:
    kw = spec.arch_kwargs
    return ProGANDiscriminator(spec.channels, spec.height, num_classes=spec.num_classes,
                               width=width or kw.get("width", 32), max_width=kw.get("max_width", 256),
                               minibatch_stddev=minibatch_stddev, minibatch_discrimination=minibatch_discrimination)


def default_kwargs(resolution: int) -> dict:
    return {"width": 32, "max_width": 256, "embed_dim": 32}


register(ModelFamily(
    name="progan",
    description="Progressive GAN: grows 4x4 -> target with fade-in, pixel norm, equalized lr, WGAN-GP",
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    default_kwargs=default_kwargs,
    supported_resolutions=(16, 32, 64, 128, 256),
    trainer="ganrt.train.progan:ProGANTrainer",
    default_loss="wgan-gp",
))
