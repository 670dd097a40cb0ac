"""Building blocks shared by ganrt's reproductions of NVlabs' StyleGAN2 and StyleGAN3 generators.

Written from the papers (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN";
Karras et al. 2021, "Alias-Free Generative Adversarial Networks") and from what NVlabs' networks compute,
so that a snapshot's tensors, loaded by name, draw the same images in fp32. Everything here is plain tensor
code with static shapes per resolution: it exports to ONNX with a dynamic batch axis and runs in fp16,
bf16 and OpenVINO without custom operators.

- :func:`upfirdn2d`: upsample by zero insertion, pad (or crop), convolve with a FIR filter, downsample, the
  resampling primitive of both papers. Convolution, not correlation: the filter is flipped.
- :class:`FullyConnected`: the equalized-learning-rate linear layer (weights scaled by
  ``lr_multiplier / sqrt(in_features)`` at run time, the bias by ``lr_multiplier``), with its activation.
- :class:`Mapping`: z (and a class label, as the one-hot ``c`` NVlabs' networks take) -> w, the tracked
  ``w_avg`` and the truncation trick toward it, one psi per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models.layers import unit_rms

# the activations of StyleGAN2/3 generators: name -> (slope for negative inputs, gain). The gain sqrt(2) keeps a
# leaky ReLU's output at about the variance of its input (the papers' equalized learning rate).
ACTIVATIONS: dict[str, tuple[float, float]] = {"linear": (1.0, 1.0), "lrelu": (0.2, math.sqrt(2))}


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float | None = None,
             clamp: float | None = None, alpha: float | None = None) -> torch.Tensor:
    """Add ``bias`` along dim 1, apply ``activation`` (its slope, or ``alpha``), scale by its gain (or ``gain``),
    clamp to +-``clamp`` (None: no clamp)."""
    slope, natural_gain = ACTIVATIONS[activation]
    slope = slope if alpha is None else alpha
    if bias is not None:  # 1-D on (B, N): a fused Gemm keeps a 1-D bias (onnxruntime's int8 quantizer needs it)
        x = x + (bias if x.ndim == 2 else bias.reshape([1, -1] + [1] * (x.ndim - 2)))
    if slope != 1.0:
        x = F.leaky_relu(x, slope)
    scale = natural_gain if gain is None else gain
    x = x * scale if scale != 1 else x
    return x if clamp is None else x.clamp(-clamp, clamp)


def fir_filter(taps: Sequence[float] | None, normalize: bool = True) -> torch.Tensor:
    """A resampling filter as NVlabs' networks store it: a short 1-D kernel (under 8 taps) becomes its 2-D
    outer product, a longer one stays 1-D (applied along each axis); normalized to unit DC gain."""
    f = torch.as_tensor([1.0] if taps is None else taps, dtype=torch.float32)
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum() if normalize else f


def pad_or_crop(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """Zero-pad the last two axes by positive amounts, crop them by negative ones."""
    if max(left, right, top, bottom) > 0:
        x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    if min(left, right, top, bottom) < 0:
        h, w = x.shape[2], x.shape[3]
        x = x[:, :, max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0)]
    return x


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Resample (B, C, H, W): insert ``up - 1`` zeros after every pixel, pad by ``padding`` = (left, right,
    top, bottom) (negative crops), convolve each channel with ``f`` (2-D, or 1-D along both axes; None: the
    identity), keep every ``down``-th pixel. ``gain`` scales the result (spread over the two axes of a 1-D f).

    The output is ``(H * up + top + bottom - (fh - 1) + down - 1) // down`` rows, likewise for columns.
    Upsampling and filtering are one depthwise transposed convolution with stride ``up`` (the zeros are
    never materialized: a zero-insertion reshape ran 4x the work, and hung OpenVINO's bf16 CPU plugin on
    two threads); downsampling is the stride of the filter's convolution.
    """
    left, right, top, bottom = padding
    if f is None:
        f = torch.ones((1, 1), dtype=x.dtype, device=x.device)
    f = f.to(x.dtype)
    if f.ndim == 1:  # separable: columns, then rows
        axis_gain = gain ** 0.5
        x = _resample_axis(x, f * axis_gain, up, down, left, right, axis=3)
        return _resample_axis(x, f * axis_gain, up, down, top, bottom, axis=2)
    channels, taps_h, taps_w = x.shape[1], int(f.shape[0]), int(f.shape[1])
    if up > 1:
        kernel = (f * gain)[None, None].expand(channels, 1, -1, -1)
        x = F.conv_transpose2d(x, kernel, stride=up, groups=channels)
        # the transposed convolution's output starts taps - 1 samples before the zero-inserted, padded image
        x = pad_or_crop(x, left - taps_w + 1, up + right - taps_w, top - taps_h + 1, up + bottom - taps_h)
        if down > 1:
            return x[:, :, ::down, ::down]
        return x
    x = pad_or_crop(x, left, right, top, bottom)
    kernel = (f * gain).flip([0, 1])[None, None].expand(channels, 1, -1, -1)  # convolution: reversed
    return F.conv2d(x, kernel, stride=down, groups=channels)


def _resample_axis(x: torch.Tensor, f: torch.Tensor, up: int, down: int, before: int, after: int,
                   axis: int) -> torch.Tensor:
    """upfirdn along one axis (2: rows, 3: columns) with 1-D filter ``f``."""
    channels, taps = x.shape[1], int(f.shape[0])
    one, shape = ((1, 1, 1, taps), (channels, 1, 1, taps)) if axis == 3 else ((1, 1, taps, 1), (channels, 1, taps, 1))
    stride_up = (1, up) if axis == 3 else (up, 1)
    stride_down = (1, down) if axis == 3 else (down, 1)
    pads = (lambda a, b: (a, b, 0, 0)) if axis == 3 else (lambda a, b: (0, 0, a, b))
    if up > 1:
        x = F.conv_transpose2d(x, f.reshape(one).expand(*shape), stride=stride_up, groups=channels)
        x = pad_or_crop(x, *pads(before - taps + 1, up + after - taps))
        if down > 1:
            return x[:, :, :, ::down] if axis == 3 else x[:, :, ::down, :]
        return x
    x = pad_or_crop(x, *pads(before, after))
    return F.conv2d(x, f.flip(0).reshape(one).expand(*shape), stride=stride_down, groups=channels)


class FullyConnected(nn.Module):
    """Equalized-lr linear layer: ``act(x @ (weight * lr / sqrt(in)).T + bias * lr) * gain``.

    The parameters are the snapshot's (allocated as zeros here); ``weight_gain`` and ``bias_gain`` are the
    run-time scales the learning-rate multiplier implies."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", bias: bool = True,
                 lr_multiplier: float = 1.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of the StyleGAN2/3 generators' "
                             f"{list(ACTIVATIONS)}")
        self.gains = (lr_multiplier / math.sqrt(in_features), lr_multiplier)  # (weight's, bias's)
        self.activation = activation
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight_gain(self) -> float:
        return self.gains[0]

    @property
    def bias_gain(self) -> float:
        return self.gains[1]

    def scaled(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) as the layer applies them."""
        bias = None if self.bias is None else self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        return self.weight * self.weight_gain, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.scaled()
        # one Gemm with its 1-D bias for a linear layer (onnxruntime's int8 quantizer needs the bias 1-D)
        linear = self.activation == "linear"
        y = F.linear(x, weight, bias if linear else None)
        return y if linear else bias_act(y, bias, self.activation)


class Mapping(nn.Module):
    """z (B, z_dim) [+ labels (B,) int64] -> w (B, w_dim); ``w_avg`` is the snapshot's tracked centre of W.

    A label enters as NVlabs' one-hot ``c``: its embedding is the label's column of the (linear) embedding
    layer, normalized and concatenated to the normalized z.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_layers: int, embed_features: int | None = None,
                 layer_features: int | None = None, activation: str = "lrelu", lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))
        width = z_dim
        if c_dim:  # the label's embedding joins z (both normalized) at the first layer
            self.embed = FullyConnected(c_dim, w_dim if embed_features is None else embed_features)
            width += self.embed.weight.shape[0]
        hidden = w_dim if layer_features is None else layer_features
        for i in range(num_layers):
            out = w_dim if i == num_layers - 1 else hidden
            setattr(self, f"fc{i}", FullyConnected(width, out, activation=activation, lr_multiplier=lr_multiplier))
            width = out

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = unit_rms(z)
        if self.c_dim:
            weight, bias = self.embed.scaled()
            y = weight.t()[labels]  # the one-hot product: the label's column, exactly
            if bias is not None:
                y = y + bias
            x = torch.cat([x, unit_rms(y)], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def truncate(self, w: torch.Tensor, truncation: torch.Tensor | None) -> torch.Tensor:
        """w moved toward ``w_avg``: ``w_avg + psi * (w - w_avg)``, one psi per image (None: psi = 1)."""
        if truncation is None:
            return w
        psi = truncation.to(w.dtype).reshape(-1, 1)
        return torch.lerp(self.w_avg.to(w.dtype).expand_as(w), w, psi.expand_as(w))


class Generator(nn.Module):
    """mapping -> truncation toward ``w_avg`` -> synthesis: ``G(z, labels=None, truncation=None)`` -> (B, C, R, R)
    float images, NVlabs' output as it is (not clamped). Every synthesis layer takes the same w."""

    def __init__(self, mapping: Mapping, synthesis: nn.Module) -> None:
        super().__init__()
        self.synthesis = synthesis
        self.mapping = mapping

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesis(self.mapping.truncate(self.mapping(z, labels), truncation))


def check_kwargs(family: str, spec, mapping_keys, synthesis_keys) -> tuple[dict, dict, int]:
    """(mapping kwargs, synthesis kwargs, w_dim) from ``spec.arch_kwargs``; ValueError names what is wrong."""
    kw = dict(spec.arch_kwargs)
    if spec.height != spec.width:
        raise ValueError(f"{family} draws square images, got {spec.height}x{spec.width}")
    unknown = set(kw) - {"w_dim", "mapping", "synthesis"}
    if unknown or "w_dim" not in kw:
        raise ValueError(f"{family} arch_kwargs take w_dim, mapping and synthesis; got {sorted(kw)}")
    mapping, synthesis = dict(kw.get("mapping") or {}), dict(kw.get("synthesis") or {})
    for name, given, known in (("mapping", mapping, mapping_keys), ("synthesis", synthesis, synthesis_keys)):
        bad = set(given) - set(known)
        if bad:
            raise ValueError(f"unknown {family} {name} arch_kwargs {sorted(bad)}; known: {list(known)}")
    return mapping, synthesis, int(kw["w_dim"])
