"""Layers shared by several families: minibatch standard deviation, minibatch discrimination,
spectral-norm wrapping."""

from __future__ import annotations

import torch
from torch import nn


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


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
