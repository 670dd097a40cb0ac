"""The image post-processing that is part of every exported graph and of the torch reference.

``(x - lo) * 255 / (hi - lo)``, clamp to [0, 255], round, NCHW -> NHWC, cast to uint8. Kept as one
``nn.Module`` so the exporter, the torch backend and the parity reference apply the very same ops.

The layout change comes before the cast: the graph ends ``Round -> Transpose -> Cast(UINT8) -> images``, so
the uint8 tensor exists only as the network's output. TensorRT takes UINT8 only as a network input or output
(onnx-tensorrt docs/operators.md: "UINT8 is only supported as network input or output tensor types", and its
Transpose lists no UINT8), so a ``Cast(UINT8) -> Transpose`` tail can be refused when the engine is built.
Transposing before the cast changes no pixel: a transpose only moves values.
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
        return torch.clamp(x, 0.0, 255.0).round().permute(0, 2, 3, 1).to(torch.uint8)


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
