"""Exponential moving average of the generator's weights -- the copy that is sampled and exported.

Parameters are averaged; buffers (BatchNorm running statistics, noise, spectral-norm vectors) are copied,
since averaging statistics of differently-weighted networks means nothing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, start: int = 0) -> None:
        self.decay = float(decay)
        self.start = int(start)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after the optimiser step ``step`` (0-based). Before ``start`` the EMA is a plain copy."""
        decay = self.decay if step >= self.start else 0.0
        for p_ema, p in zip(self.module.parameters(), model.parameters(), strict=True):
            if decay == 0.0:
                p_ema.copy_(p)
            else:
                p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
