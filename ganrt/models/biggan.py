"""BigGAN-style generator and projection discriminator (Brock et al. 2019), small and export-friendly.

G: hierarchical latents -- z is split into one chunk for the 4x4 input and one per residual block; each
block's conditional BatchNorm takes its gain and bias from [shared class embedding, z chunk] -- residual
up-blocks (BN -> ReLU -> nearest x2 -> conv3x3 -> BN -> ReLU -> conv3x3, plus an upsampled 1x1 skip), a
SAGAN self-attention block (query/key with C/8 channels, gamma initialized to 0) at ``attn_resolution``,
then BN -> ReLU -> conv3x3 -> tanh. Spectral norm on every conv/linear of G, and of D when the trainer's
``spectral_norm`` option (``--spectral-norm``) is on.

D: residual down-blocks (pre-activation), self-attention, ReLU, sum pooling, a linear head plus the
projection term <embed(y), features> when conditional; optional minibatch stddev / discrimination.

Training: hinge loss (the family default), EMA of G, and :func:`orthogonal_regularization` as an option.
Export: spectral norm is a parametrization; in eval mode it reads its stored u/v without power iterations,
so ``remove_parametrizations(..., leave_parametrized=True)`` (done by the exporter, or
:func:`remove_spectral_norm`) freezes the normalized weights into constants with identical outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register, square_generator_kwargs
from ganrt.models.layers import MinibatchDiscrimination, MinibatchStdDev, doubling_levels, level_channels

SN = nn.utils.parametrizations.spectral_norm


def sn_conv(in_ch: int, out_ch: int, k: int, bias: bool = True, sn: bool = True) -> nn.Module:
    conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=bias)
    return SN(conv, eps=1e-6) if sn else conv


def sn_linear(in_f: int, out_f: int, bias: bool = True, sn: bool = True) -> nn.Module:
    linear = nn.Linear(in_f, out_f, bias=bias)
    return SN(linear, eps=1e-6) if sn else linear


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine; gain (1 + .) and bias come from the condition vector (B, cond_dim)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=1e-4)
        self.gain = sn_linear(cond_dim, channels, bias=False)
        self.bias = sn_linear(cond_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1.0 + self.gain(y))[:, :, None, None] + self.bias(y)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention as in BigGAN: theta/phi with C/8 channels, g with C/2, phi and g max-pooled
    2x2; out = x + gamma * o(attention), gamma starting at 0 so the block begins as the identity."""

    def __init__(self, channels: int, sn: bool = True) -> None:
        super().__init__()
        self.theta = sn_conv(channels, max(channels // 8, 1), 1, bias=False, sn=sn)
        self.phi = sn_conv(channels, max(channels // 8, 1), 1, bias=False, sn=sn)
        self.g = sn_conv(channels, max(channels // 2, 1), 1, bias=False, sn=sn)
        self.o = sn_conv(max(channels // 2, 1), channels, 1, bias=False, sn=sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        theta = self.theta(x).flatten(2)  # (B, C/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, C/8, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (B, C/2, HW/4)
        beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (B, HW, HW/4)
        o = (g @ beta.transpose(1, 2)).unflatten(2, (h, w))  # (B, C/2, H, W)
        return x + self.gamma * self.o(o)


class GBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_dim: int) -> None:
        super().__init__()
        self.bn0 = ConditionalBatchNorm(in_ch, cond_dim)
        self.conv0 = sn_conv(in_ch, out_ch, 3)
        self.bn1 = ConditionalBatchNorm(out_ch, cond_dim)
        self.conv1 = sn_conv(out_ch, out_ch, 3)
        self.skip = sn_conv(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn0(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv1(F.relu(self.bn1(self.conv0(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class BigGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, num_classes: int = 0, width: int = 32,
                 max_width: int = 256, shared_dim: int = 32, attn_resolution: int = 0) -> None:
        super().__init__()
        self.levels = doubling_levels(resolution, "BigGAN")
        self.num_classes = num_classes
        chunk = latent_dim // (self.levels + 1)
        if chunk < 1:
            raise ValueError(f"BigGAN splits z into {self.levels + 1} chunks; latent_dim {latent_dim} is too small")
        self.z_split = [latent_dim - chunk * self.levels] + [chunk] * self.levels  # the first takes the remainder
        ch = [level_channels(i, self.levels, width, max_width) for i in range(self.levels + 1)]
        self.ch0 = ch[0]
        if num_classes:
            self.shared = nn.Embedding(num_classes, shared_dim)  # one class embedding shared by all blocks
        cond_dim = chunk + (shared_dim if num_classes else 0)
        self.linear = sn_linear(self.z_split[0], ch[0] * 16)
        self.blocks = nn.ModuleList(GBlock(ch[i], ch[i + 1], cond_dim) for i in range(self.levels))
        self.attn_after = None  # index of the block after which attention runs
        if attn_resolution:
            level = int(math.log2(attn_resolution)) - 2
            if not 1 <= level <= self.levels or 4 * 2**level != attn_resolution:
                raise ValueError(f"attn_resolution must be a power of two in [8, {resolution}] or 0, "
                                 f"got {attn_resolution}")
            self.attn_after = level - 1
            self.attn = SelfAttention(ch[level])
        self.out_bn = nn.BatchNorm2d(ch[-1], eps=1e-4)
        self.out_conv = sn_conv(ch[-1], channels, 3)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        zs = torch.split(z, self.z_split, dim=1)
        x = self.linear(zs[0]).unflatten(1, (self.ch0, 4, 4))  # (B, ch0, 4, 4)
        shared = self.shared(labels) if self.num_classes else None
        for i, block in enumerate(self.blocks):
            y = torch.cat([shared, zs[i + 1]], dim=1) if shared is not None else zs[i + 1]
            x = block(x, y)
            if i == self.attn_after:
                x = self.attn(x)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(x))))


class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, preactivation: bool = True, sn: bool = True) -> None:
        super().__init__()
        self.preactivation = preactivation
        self.conv0 = sn_conv(in_ch, out_ch, 3, sn=sn)
        self.conv1 = sn_conv(out_ch, out_ch, 3, sn=sn)
        self.skip = sn_conv(in_ch, out_ch, 1, sn=sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = F.avg_pool2d(self.conv1(F.relu(self.conv0(h))), 2)
        if self.preactivation:
            return h + F.avg_pool2d(self.skip(x), 2)
        return h + self.skip(F.avg_pool2d(x, 2))


class BigGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int = 0, width: int = 32, max_width: int = 256,
                 attn_resolution: int = 0, minibatch_stddev: bool = False, mbstd_group: int = 4,
                 minibatch_discrimination: bool = False, mbd_kernels: int = 16, spectral_norm: bool = True) -> None:
        super().__init__()
        sn = spectral_norm
        levels = doubling_levels(resolution, "BigGAN")
        ch = [level_channels(i, levels, width, max_width) for i in range(levels + 1)]
        blocks: list[nn.Module] = []
        in_ch = channels
        for level in range(levels, 0, -1):  # level -> level - 1
            blocks.append(DBlock(in_ch, ch[level - 1], preactivation=level != levels, sn=sn))
            in_ch = ch[level - 1]
            if attn_resolution and 4 * 2 ** (level - 1) == attn_resolution:
                blocks.append(SelfAttention(in_ch, sn=sn))
        self.blocks = nn.Sequential(*blocks)  # (B, ch0, 4, 4)
        self.mbstd = MinibatchStdDev(mbstd_group) if minibatch_stddev else None
        self.final = DBlock(in_ch + (1 if minibatch_stddev else 0), ch[0], sn=sn)
        self.mbd = MinibatchDiscrimination(ch[0], mbd_kernels) if minibatch_discrimination else None
        self.head = sn_linear(ch[0] + (mbd_kernels if minibatch_discrimination else 0), 1, sn=sn)
        self.num_classes = num_classes
        if num_classes:
            embed = nn.Embedding(num_classes, ch[0])
            self.embed = SN(embed, eps=1e-6) if sn else embed

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        h = self.blocks(x)
        if self.mbstd is not None:
            h = self.mbstd(h)
        h = self.final(h)  # (B, ch0, 2, 2)
        feats = F.relu(h).sum(dim=(2, 3))  # (B, ch0): sum pooling
        logits = self.head(self.mbd(feats) if self.mbd is not None else feats).squeeze(1)
        if self.num_classes:  # projection discriminator
            logits = logits + (self.embed(labels) * feats).sum(dim=1)
        return (logits, feats) if return_features else logits


def orthogonal_regularization(module: nn.Module, strength: float = 1e-4) -> torch.Tensor:
    """BigGAN's orthogonal regularization: strength * sum ||W W^T * (1 - I)||_F^2 over conv/linear weights
    (the raw weights under spectral norm); embeddings, gains and biases are left out."""
    total = None
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if nn.utils.parametrize.is_parametrized(m, "weight"):
            w = m.parametrizations.weight.original
        else:
            w = m.weight
        w = w.flatten(1)  # (out, fan_in)
        gram = w @ w.t()
        term = (gram * (1.0 - torch.eye(w.shape[0], device=w.device))).square().sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return strength * total


def remove_spectral_norm(module: nn.Module) -> nn.Module:
    """Freeze every parametrization into a plain weight (call in eval mode, before export)."""
    for m in module.modules():
        if nn.utils.parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                nn.utils.parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


GENERATOR_KWARGS = ("width", "max_width", "shared_dim", "attn_resolution")


def build_generator(spec) -> BigGANGenerator:
    kw = square_generator_kwargs(spec, "BigGAN", GENERATOR_KWARGS)
    return BigGANGenerator(spec.latent_dim, spec.channels, spec.height, num_classes=spec.num_classes,
                           **kw)


def build_discriminator(spec, spectral_norm: bool = True, minibatch_stddev: bool = False,
                        minibatch_discrimination: bool = False, width: int | None = None,
                        **_ignored) -> BigGANDiscriminator:
    kw = spec.arch_kwargs
    return BigGANDiscriminator(spec.channels, spec.height, num_classes=spec.num_classes,
                               width=width or kw.get("width", 32), max_width=kw.get("max_width", 256),
                               attn_resolution=kw.get("attn_resolution", 0), minibatch_stddev=minibatch_stddev,
                               minibatch_discrimination=minibatch_discrimination, spectral_norm=spectral_norm)


def default_kwargs(resolution: int) -> dict:
    return {"width": 32, "max_width": 256, "shared_dim": 32, "attn_resolution": min(resolution // 2, 64)}


register(ModelFamily(
    name="biggan",
    description="BigGAN-style: hierarchical z, shared-embedding conditional BN, self-attention, SN, projection D",
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    default_kwargs=default_kwargs,
    supported_resolutions=(16, 32, 64, 128),
    default_loss="hinge",
))
