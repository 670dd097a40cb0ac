"""Layers shared by several families: minibatch standard deviation, minibatch discrimination,
spectral-norm wrapping."""

from __future__ import annotations

import math

import torch
from torch import nn


def unit_rms(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each row of ``x`` divided by its root mean square over dim 1 (StyleGAN's normalization of z)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def doubling_levels(resolution: int, family: str) -> int:
    """How many x2 steps lie between 4x4 and ``resolution`` (a power of two >= 8)."""
    n = int(math.log2(resolution)) if resolution > 0 else 0
    if 2**n != resolution or resolution < 8:
        raise ValueError(f"{family} resolution must be a power of two >= 8, got {resolution}")
    return n - 2


def level_channels(level: int, levels: int, width: int, max_width: int) -> int:
    """Channels at ``level`` (0 = 4x4): ``width`` at full resolution, doubling per level down, capped."""
    return min(width * 2 ** (levels - level), max_width)


class MinibatchStdDev(nn.Module):
    """Appends the mean per-group feature stddev as one channel (Karras et al. 2018), so D can see a
    batch whose samples all look alike -- a countermeasure to mode collapse."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C+1, H, W)
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        if b % g:
            g = 1
        y = x.reshape(g, -1, c, h, w)
        y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (B/g, C, H, W)
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)  # (B/g, 1, 1, 1)
        y = y.repeat(g, 1, h, w)  # (B, 1, H, W)
        return torch.cat([x, y], dim=1)


# --- equalized learning rate (Karras et al. 2018), pixel norm, minibatch discrimination ---------------------------
# Used by progan and stylegan. Weights are stored N(0, 1) / lr_mul and scaled by lr_mul / sqrt(fan_in) at run
# time, so Adam's per-parameter step is the same for every layer (and lr_mul < 1 slows a layer, e.g. the
# StyleGAN mapping network at 0.01).


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / in_features**0.5
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        bias = self.bias * self.bias_gain if self.bias is not None else None
        return nn.functional.linear(x, self.weight * self.weight_gain, bias)


class EqualizedConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 padding: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / (in_channels * kernel_size * kernel_size) ** 0.5
        self.padding = kernel_size // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Normalizes each pixel's feature vector to unit mean square (over dim 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016): for each sample, ``num_kernels`` features saying how
    close it is to the other samples of the batch, appended to its features. (B, F) -> (B, F + num_kernels).

    M = x @ T reshaped to (B, num_kernels, kernel_dim); o_b(x_i) = sum_{j != i} exp(-||M_i,b - M_j,b||_1).
    """

    def __init__(self, in_features: int, num_kernels: int = 16, kernel_dim: int = 8) -> None:
        super().__init__()
        self.num_kernels = num_kernels
        self.kernel_dim = kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).unflatten(1, (self.num_kernels, self.kernel_dim))  # (B, K, D)
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (B, B, K)
        o = torch.exp(-dist).sum(dim=1) - 1.0  # (B, K); minus exp(0) of each sample with itself
        return torch.cat([x, o], dim=1)
