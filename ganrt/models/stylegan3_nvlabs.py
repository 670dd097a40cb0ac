"""NVlabs' StyleGAN3 generator (configs T and R), reproduced in plain tensor code so that an imported
snapshot draws NVlabs' images exactly in fp32.

Built by ``ganrt import nvlabs`` from a snapshot (``ganrt.importers.nvlabs``), never trained here. Module
and tensor names are the snapshot's (``synthesis.input.freqs``, ``synthesis.L3_52_512.up_filter``, ...).

The network (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"):

- the input is Fourier features: ``channels`` sinusoids of fixed frequencies and phases, sampled on a
  ``size`` x ``size`` grid at the first layer's sampling rate, rotated and translated per image by an affine
  map of w (and by the snapshot's ``transform``), frequencies past the band faded, then mixed by a learned
  matrix;
- synthesis layers and a ToRGB layer, each: a modulated convolution (``conv_kernel`` x ``conv_kernel``; 1x1
  in config R; weights and styles pre-normalized, demodulated, the input scaled by the tracked
  1/sqrt(``magnitude_ema``)), then the filtered leaky ReLU: bias, upsampling by ``up_factor`` through the
  layer's ``up_filter``, leaky ReLU times sqrt(2), clamp to +-``conv_clamp``, low-pass through its
  ``down_filter`` (2-D and radially symmetric in config R's non-critical layers, else separable) and
  downsampling by ``down_factor``;
- the output is scaled by ``output_scale``.

The geometry of every layer (grid sizes, channels, resampling factors, filter lengths, paddings) is not
derived here: the importer reads it from the snapshot's layer objects into the spec (``synthesis.input``,
``synthesis.layers``), and the filters and Fourier frequencies are the snapshot's tensors. A build from a
spec allocates them (zeros) for the checkpoint to fill. Export form as in stylegan2_nvlabs: modulation by
scaling activations, a convolution whose weight the batch shares, and demodulation coefficients per sample
(each image's styles pre-normalized by their own RMS, so an image never depends on the others in its batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register
from ganrt.models.nvlabs_layers import FullyConnected, Generator, Mapping, bias_act, check_kwargs, upfirdn2d

MAPPING_DEFAULTS = {"num_layers": 2, "lr_multiplier": 0.01}
SYNTHESIS_KEYS = ("input", "layers", "output_scale")


@dataclass(frozen=True)
class InputPlan:
    """The Fourier-feature input: ``channels`` features on a ``size`` x ``size`` grid sampled at
    ``sampling_rate``, frequencies within ``bandwidth``."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerPlan:
    """One synthesis layer as the snapshot built it (its attributes of the same names)."""

    name: str
    is_torgb: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # left, right, top, bottom
    conv_clamp: float | None

    def grid_sizes(self) -> tuple[int, int]:
        """(height, width) the layer's forward pass makes of its input grid: the convolution grows it by
        kernel - 1, the upsampling filter adds the padding less its taps - 1, the low-pass and downsampling
        take down_taps - 1 and keep every down_factor-th sample."""
        left, right, top, bottom = self.padding

        def size(before: int, after: int) -> int:
            n = (self.in_size + self.conv_kernel - 1) * self.up_factor + before + after - (self.up_taps - 1)
            return (n - (self.down_taps - 1) + self.down_factor - 1) // self.down_factor

        return size(top, bottom), size(left, right)


def plan_from_dict(cls, given: dict):
    """``cls`` (InputPlan or LayerPlan) from a spec's dict, every field present and of its type (ValueError)."""
    names = [f.name for f in fields(cls)]
    if not isinstance(given, dict) or set(given) != set(names):
        raise ValueError(f"a StyleGAN3 {cls.__name__} takes exactly {names}, got {given!r:.200}")
    values = {}
    for f in fields(cls):
        v = given[f.name]
        kind = str(f.type)
        if kind == "bool":
            ok = isinstance(v, bool)
        elif kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif kind == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif kind == "str":
            ok = isinstance(v, str) and v.isidentifier()
        elif f.name == "padding":
            ok = isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, int) for x in v)
            v = tuple(v) if ok else v
        else:  # conv_clamp
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
        if not ok:
            raise ValueError(f"StyleGAN3 {cls.__name__}.{f.name} is {v!r}, not a valid {kind}")
        values[f.name] = v
    plan = cls(**values)
    if cls is LayerPlan:
        sizes = plan.grid_sizes()
        if sizes != (plan.out_size, plan.out_size):
            raise ValueError(f"StyleGAN3 layer {plan.name}: padding {list(plan.padding)} with its kernel, filters and "
                             f"factors gives a {sizes[0]}x{sizes[1]} grid, not its out_size {plan.out_size}")
    return plan


class SynthesisInput(nn.Module):
    """Fourier features (B, channels, size, size), transformed per image by an affine map of w."""

    def __init__(self, w_dim: int, plan: InputPlan) -> None:
        super().__init__()
        channels, size = plan.channels, plan.size
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = plan.sampling_rate, plan.bandwidth
        self.weight = nn.Parameter(torch.zeros(channels, channels))
        self.affine = FullyConnected(w_dim, 4)
        self.register_buffer("transform", torch.eye(3))  # identity unless the snapshot stores one (after the pose)
        self.register_buffer("freqs", torch.zeros(channels, 2))  # the snapshot's
        self.register_buffer("phases", torch.zeros(channels))
        # sample positions: pixel centres of a size x size grid, in units of the first layer's sampling period
        half = 0.5 * size / plan.sampling_rate
        theta = torch.tensor([[half, 0.0, 0.0], [0.0, half, 0.0]])
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, size, size], align_corners=False)  # (1, H, W, 2)
        self.register_buffer("grid", grid.reshape(1, size * size, 2), persistent=False)

    def pose(self, w: torch.Tensor) -> torch.Tensor:
        """(B, 2, 3): each image's rotation and translation of the sample grid, from the affine layer's (cos,
        sin, x, y) with the rotation part normalized, followed by the stored ``transform``: a sample at p reads
        the features at pose @ [p, 1]."""
        a = self.affine(w)
        a = a / a[:, :2].norm(dim=1, keepdim=True)
        cos, sin, dx, dy = a.unbind(dim=1)
        # rotate after moving by (-dx, -dy)
        rows = torch.stack([cos, -sin, sin * dy - cos * dx, sin, cos, -(sin * dx + cos * dy)], dim=1)
        return small_matmul(rows.reshape(-1, 2, 3), self.transform.unsqueeze(0))

    def band_fade(self, freqs: torch.Tensor) -> torch.Tensor:
        """Per feature, 1 inside the band, falling linearly to 0 at the Nyquist rate of the first layer's
        sampling: a pose that stretches a frequency past the band fades it rather than aliasing it."""
        nyquist = self.sampling_rate / 2
        return (1 - (freqs.norm(dim=2) - self.bandwidth) / (nyquist - self.bandwidth)).clamp(0, 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        pose = self.pose(w)
        base = self.freqs.unsqueeze(0)  # (1, C, 2)
        freqs = small_matmul(base, pose[:, :, :2])  # (B, C, 2)
        phases = self.phases.unsqueeze(0) + small_matmul(base, pose[:, :, 2:]).squeeze(2)  # (B, C)
        angle = small_matmul(self.grid, freqs.transpose(1, 2)) + phases.unsqueeze(1)  # (B, H*W, C)
        features = torch.sin(angle * (2 * math.pi)) * self.band_fade(freqs).unsqueeze(1)
        mixed = features @ (self.weight / math.sqrt(self.channels)).t()
        return mixed.transpose(1, 2).reshape(-1, self.channels, self.size, self.size)


def small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for an inner dimension of 2 or 3, as products and sums: no MatMul node whose constant operand
    a quantizer would take for weights (NNCF's int8 per-channel scales on the Fourier grid's product broke
    OpenVINO's CPU plugin; and the phase arguments of sin must not be quantized)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k:k + 1] * b[..., k:k + 1, :]
    return out


class SynthesisLayer(nn.Module):
    """Modulated conv, then the filtered leaky ReLU (bias, up, lrelu * gain, clamp, low-pass, down)."""

    def __init__(self, plan: LayerPlan, w_dim: int) -> None:
        super().__init__()
        self.plan = plan
        self.affine = FullyConnected(w_dim, plan.in_channels)
        k = plan.conv_kernel
        self.weight = nn.Parameter(torch.zeros(plan.out_channels, plan.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(plan.out_channels))
        self.register_buffer("magnitude_ema", torch.ones(()))
        # the snapshot's filters: separable (1-D) but for a radial low-pass; one tap is no filter at all
        down_shape = (plan.down_taps, plan.down_taps) if plan.down_radial else (plan.down_taps,)
        self.register_buffer("up_filter", torch.zeros(plan.up_taps) if plan.up_taps > 1 else None)
        self.register_buffer("down_filter", torch.zeros(down_shape) if plan.down_taps > 1 else None)
        # ToRGB: no demodulation, its styles scaled by 1/sqrt(fan-in), and no nonlinearity (slope 1, gain 1)
        fan_in = plan.in_channels * plan.conv_kernel ** 2
        self.style_gain = 1 / math.sqrt(fan_in) if plan.is_torgb else 1.0
        self.activation = (1.0, 1.0) if plan.is_torgb else (math.sqrt(2), 0.2)  # (gain, slope)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = self.plan
        styles = self.affine(w) * self.style_gain  # (B, I)
        weight = self.weight
        if not p.is_torgb:  # weight and styles to unit RMS (each image by its own styles), then demodulated
            weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        x = x * (styles * self.magnitude_ema.rsqrt()).reshape(*styles.shape, 1, 1)
        x = F.conv2d(x, weight, padding=p.conv_kernel - 1)
        if not p.is_torgb:
            x = x * (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()[:, :, None, None]
        return filtered_lrelu(x, self.bias, self.up_filter, self.down_filter, p, *self.activation)


def filtered_lrelu(x: torch.Tensor, bias: torch.Tensor, up_filter: torch.Tensor | None,
                   down_filter: torch.Tensor | None, plan: LayerPlan, gain: float, slope: float) -> torch.Tensor:
    """The alias-free nonlinearity: add the bias, upsample by ``plan.up_factor`` through ``up_filter`` (padded
    by ``plan.padding``), leaky ReLU of ``slope`` times ``gain`` clamped to +-``plan.conv_clamp``, then low-pass
    through ``down_filter`` and keep every ``plan.down_factor``-th sample."""
    x = bias_act(x, bias)
    x = upfirdn2d(x, up_filter, up=plan.up_factor, padding=plan.padding, gain=plan.up_factor ** 2)
    x = bias_act(x, None, "lrelu", gain=gain, clamp=plan.conv_clamp, alpha=slope)
    return upfirdn2d(x, down_filter, down=plan.down_factor)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, input: InputPlan, layers: list[LayerPlan], output_scale: float) -> None:
        super().__init__()
        self.plans = layers
        self.output_scale = output_scale
        self.input = SynthesisInput(w_dim, input)
        self.layer_names = [p.name for p in layers]
        for plan in layers:
            setattr(self, plan.name, SynthesisLayer(plan, w_dim))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.input(w)
        for name in self.layer_names:
            x = getattr(self, name)(x, w)
        return x * self.output_scale if self.output_scale != 1 else x


def build_generator(spec) -> Generator:
    mapping, synthesis, w_dim = check_kwargs("stylegan3_nvlabs", spec, MAPPING_DEFAULTS, SYNTHESIS_KEYS)
    mapping = {**MAPPING_DEFAULTS, **mapping}
    if set(synthesis) != set(SYNTHESIS_KEYS) or not isinstance(synthesis["layers"], list) or not synthesis["layers"]:
        raise ValueError(f"stylegan3_nvlabs synthesis arch_kwargs take {list(SYNTHESIS_KEYS)} (the snapshot's "
                         f"layers, as `ganrt import nvlabs` reads them); got {sorted(synthesis)}")
    layers = [plan_from_dict(LayerPlan, d) for d in synthesis["layers"]]
    last = layers[-1]
    if not last.is_torgb or last.out_channels != spec.channels or last.out_size != spec.height:
        raise ValueError(f"the last StyleGAN3 layer must be ToRGB of {spec.channels} channels at {spec.height}, "
                         f"got {last}")
    for before, after in zip(layers, layers[1:], strict=False):
        if (before.out_channels, before.out_size) != (after.in_channels, after.in_size):
            raise ValueError(f"StyleGAN3 layer {after.name} takes {after.in_channels}x{after.in_size}, "
                             f"{before.name} gives {before.out_channels}x{before.out_size}")
    first = plan_from_dict(InputPlan, synthesis["input"])
    if (first.channels, first.size) != (layers[0].in_channels, layers[0].in_size):
        raise ValueError(f"StyleGAN3 layer {layers[0].name} takes {layers[0].in_channels}x{layers[0].in_size}, "
                         f"the input gives {first.channels}x{first.size}")
    return Generator(Mapping(spec.latent_dim, spec.num_classes, w_dim, num_layers=mapping["num_layers"],
                             lr_multiplier=mapping["lr_multiplier"]),
                     SynthesisNetwork(w_dim, first, layers, float(synthesis["output_scale"])))


register(ModelFamily(
    name="stylegan3_nvlabs",
    description="NVlabs StyleGAN3 (configs T and R), imported from a snapshot",
    build_generator=build_generator,
    build_discriminator=None,
    has_truncation=True,
    supported_resolutions=(),
))
