"""The image post-processing that is part of every exported graph and of the torch reference.

``(x - lo) * 255 / (hi - lo)``, clamp to [0, 255], round, cast to uint8, NCHW -> NHWC. Kept as one
``nn.Module`` so the exporter, the torch backend and the parity reference apply the very same ops.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUT_FORMATS = ("uint8-nhwc", "float-nchw")


class ToUint8NHWC(nn.Module):
    def __init__(self, output_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        lo, hi = output_range
        self.offset = float(-lo)
        self.scale = 255.0 / float(hi - lo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) float -> (B, H, W, C) uint8
        x = (x.float() + self.offset) * self.scale
        x = torch.clamp(x, 0.0, 255.0).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1)


def to_uint8_nhwc(x: torch.Tensor, output_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    return ToUint8NHWC(output_range)(x)


class WithPostprocess(nn.Module):
    """A generator + ToUint8NHWC called with keyword inputs (z, labels, truncation) -> uint8 (B, H, W, C):
    what the torch backend runs."""

    def __init__(self, generator: nn.Module, output_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.g = generator
        self.post = ToUint8NHWC(output_range)

    def forward(self, z, labels=None, truncation=None):
        return self.post(self.g(z, labels, truncation))
