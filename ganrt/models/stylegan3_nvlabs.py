"""NVlabs' StyleGAN3 generator (configs T and R), reproduced in plain tensor code so that an imported
snapshot draws NVlabs' images exactly in fp32.

Built by ``ganrt import nvlabs`` from a snapshot (``ganrt.importers.nvlabs``), never trained here. Module
and tensor names are the snapshot's (``synthesis.input.freqs``, ``synthesis.L3_52_512.up_filter``, ...).

The network (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"):

- the input is Fourier features: ``channels`` sinusoids of fixed frequencies and phases, sampled on a
  ``size`` x ``size`` grid at the first layer's sampling rate, rotated and translated per image by an affine
  map of w (and by the snapshot's ``transform``), out-of-band frequencies faded, then mixed by a learned
  matrix;
- ``num_layers`` synthesis layers and a ToRGB layer. Layer i has a cutoff f_c rising geometrically from
  ``first_cutoff`` to half the output resolution (reached ``num_critical`` layers before the end, which
  are critically sampled), a minimum stopband f_t rising from ``first_stopband`` to ``last_stopband_rel``
  times the last cutoff, a sampling rate s = the power of two at or above 2 f_t (at most the resolution),
  a transition half-width max(f_t, s/2) - f_c, a grid of s + 2 * ``margin_size`` pixels (the resolution for
  the last two) and min(channel_base / 2 / f_c, channel_max) channels;
- each layer: a modulated convolution (``conv_kernel`` x ``conv_kernel``; 1x1 in config R; weights and
  styles pre-normalized, demodulated, input scaled by the tracked 1/sqrt(magnitude_ema)), then the filtered
  leaky ReLU: bias, upsample to ``lrelu_upsampling`` times the higher of the two sampling rates through a
  Kaiser-windowed low-pass filter at the input cutoff, leaky ReLU times sqrt(2), clamp to +-``conv_clamp``,
  low-pass at the output cutoff (radially symmetric, jinc-based, in config R's non-critical layers) and
  downsample to the output rate. Paddings follow the paper's symmetric sample placement.
- the output is scaled by ``output_scale``.

The filters are buffers (``up_filter``, ``down_filter``) loaded from the snapshot; a fresh build designs
them the same way (scipy.signal.firwin; the jinc formula with a Kaiser window). Export form as in
stylegan2_nvlabs: modulation by scaling activations, a convolution whose weight the batch shares, and
demodulation coefficients per sample (each image's styles pre-normalized by their own RMS, so an image
never depends on the others in its batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register
from ganrt.models.nvlabs_layers import FullyConnected, Generator, Mapping, bias_act, upfirdn2d
from ganrt.models.stylegan2_nvlabs import check_kwargs

# NVlabs' defaults for the synthesis network (the paper's config T; config R sets conv_kernel 1,
# use_radial_filters and doubles channel_base/channel_max)
SYNTHESIS_DEFAULTS = {
    "channel_base": 32768, "channel_max": 512, "num_layers": 14, "num_critical": 2, "first_cutoff": 2.0,
    "first_stopband": 2 ** 2.1, "last_stopband_rel": 2 ** 0.3, "margin_size": 10, "output_scale": 0.25,
    "conv_kernel": 3, "filter_size": 6, "lrelu_upsampling": 2, "use_radial_filters": False, "conv_clamp": 256,
}
MAPPING_DEFAULTS = {"num_layers": 2, "lr_multiplier": 0.01}


@dataclass(frozen=True)
class LayerPlan:
    """The geometry of one synthesis layer (index ``i``) derived from the network's hyperparameters."""

    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]  # left, right, top, bottom
    tmp_sampling_rate: int


def plan_layers(img_resolution: int, img_channels: int, *, channel_base, channel_max, num_layers, num_critical,
                first_cutoff, first_stopband, last_stopband_rel, margin_size, conv_kernel, filter_size,
                lrelu_upsampling, use_radial_filters, **_unused) -> tuple[dict, list[LayerPlan]]:
    """(input plan, layer plans) for a network of these hyperparameters (see the module docstring)."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    progress = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** progress
    stopbands = first_stopband * (last_stopband / first_stopband) ** progress
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    first = {"channels": int(channels[0]), "size": int(sizes[0]), "sampling_rate": float(rates[0]),
             "bandwidth": float(cutoffs[0])}
    plans = []
    for i in range(num_layers + 1):
        prev = max(i - 1, 0)
        torgb = i == num_layers
        critical = i >= num_layers - num_critical
        s_in, s_out = int(rates[prev]), int(rates[i])
        tmp = max(s_in, s_out) * (1 if torgb else lrelu_upsampling)
        up, down = int(round(tmp / s_in)), int(round(tmp / s_out))
        if s_in * up != tmp or s_out * down != tmp:
            raise ValueError(f"layer {i}: sampling rates {s_in} -> {s_out} are not integer resampling factors")
        up_taps = filter_size * up if up > 1 and not torgb else 1
        down_taps = filter_size * down if down > 1 and not torgb else 1
        kernel = 1 if torgb else conv_kernel
        in_size, out_size = int(sizes[prev]), int(sizes[i])
        # input grows by the kernel and the upsampling; the filters shrink it; the rest is padding, placed so
        # that samples sit symmetrically (more before than after by the upsampling factor's half)
        total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        plans.append(LayerPlan(
            name=f"L{i}_{out_size}_{int(channels[i])}", is_torgb=torgb, is_critically_sampled=critical,
            in_channels=int(channels[prev]), out_channels=int(channels[i]), in_size=in_size, out_size=out_size,
            in_sampling_rate=s_in, out_sampling_rate=s_out, in_cutoff=float(cutoffs[prev]),
            out_cutoff=float(cutoffs[i]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[i]), conv_kernel=kernel, up_factor=up, down_factor=down,
            up_taps=up_taps, down_taps=down_taps, down_radial=bool(use_radial_filters and not critical),
            padding=(lo, total - lo, lo, total - lo), tmp_sampling_rate=tmp))
    return first, plans


def lowpass_filter(taps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR: separable 1-D (sinc), or 2-D radially symmetric (jinc). None: 1 tap."""
    if taps == 1:
        return None
    import scipy.signal
    import scipy.special

    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps=taps, cutoff=cutoff, width=width, fs=fs),
                               dtype=torch.float32)
    x = (np.arange(taps) - (taps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(taps, width / (fs / 2)))
    window = np.kaiser(taps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


class SynthesisInput(nn.Module):
    """Fourier features (B, channels, size, size), transformed per image by an affine map of w."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.channels = channels
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        freqs = torch.randn(channels, 2)  # random directions, radii drawn toward a disc of radius bandwidth
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4, bias_init=(1.0, 0.0, 0.0, 0.0))
        nn.init.zeros_(self.affine.weight)
        self.register_buffer("transform", torch.eye(3))  # the user's inverse transform of the image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)
        # sample positions: pixel centres of a size x size grid, in units of the first layer's sampling period
        theta = torch.tensor([[0.5 * size / sampling_rate, 0.0, 0.0], [0.0, 0.5 * size / sampling_rate, 0.0]])
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, size, size], align_corners=False)  # (1, H, W, 2)
        self.register_buffer("grid", grid.reshape(1, size * size, 2), persistent=False)
        self.size = size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # (B, 4): rotation (cos, sin) and translation (x, y), the rotation normalized
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rotation = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
        translation = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(-1, 3, 3)
        transforms = small_matmul(small_matmul(rotation, translation), self.transform.unsqueeze(0))  # (B, 3, 3)
        freqs = self.freqs.unsqueeze(0)  # (1, C, 2)
        phases = self.phases.unsqueeze(0) + small_matmul(freqs, transforms[:, :2, 2:]).squeeze(2)  # (B, C)
        freqs = small_matmul(freqs, transforms[:, :2, :2])  # (B, C, 2)
        # fade frequencies the user's transform pushed past the band toward the Nyquist rate
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth))
        amplitudes = amplitudes.clamp(0, 1)
        x = small_matmul(self.grid, freqs.transpose(1, 2))  # (B, H*W, C): position . frequency
        x = torch.sin((x + phases.unsqueeze(1)) * (math.pi * 2)) * amplitudes.unsqueeze(1)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.transpose(1, 2).reshape(-1, self.channels, self.size, self.size)


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

    def __init__(self, plan: LayerPlan, w_dim: int, conv_clamp: float | None = 256) -> None:
        super().__init__()
        self.plan = plan
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, plan.in_channels, bias_init=1.0)
        k = plan.conv_kernel
        self.weight = nn.Parameter(torch.randn(plan.out_channels, plan.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(plan.out_channels))
        self.register_buffer("magnitude_ema", torch.ones(()))
        up = lowpass_filter(plan.up_taps, plan.in_cutoff, plan.in_half_width * 2, plan.tmp_sampling_rate)
        down = lowpass_filter(plan.down_taps, plan.out_cutoff, plan.out_half_width * 2, plan.tmp_sampling_rate,
                              radial=plan.down_radial)
        self.register_buffer("up_filter", up)  # None (1 tap) registers nothing to load
        self.register_buffer("down_filter", down)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = self.plan
        styles = self.affine(w)  # (B, I)
        weight = self.weight
        input_gain = self.magnitude_ema.rsqrt()
        if p.is_torgb:
            styles = styles * (1 / math.sqrt(p.in_channels * p.conv_kernel ** 2))
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None], weight, padding=p.conv_kernel - 1)
        else:  # pre-normalize weight and styles (each image by its own styles), then demodulate
            weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
            d = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (B, O)
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None], weight, padding=p.conv_kernel - 1)
            x = x * d[:, :, None, None]
        gain, slope = (1.0, 1.0) if p.is_torgb else (math.sqrt(2), 0.2)
        x = bias_act(x, self.bias)
        x = upfirdn2d(x, self.up_filter, up=p.up_factor, padding=p.padding, gain=p.up_factor ** 2)
        x = bias_act(x, None, "lrelu", gain=gain, clamp=self.conv_clamp, alpha=slope)
        return upfirdn2d(x, self.down_filter, down=p.down_factor)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, **kwargs) -> None:
        super().__init__()
        options = {**SYNTHESIS_DEFAULTS, **kwargs}
        first, self.plans = plan_layers(img_resolution, img_channels, **options)
        self.output_scale = options["output_scale"]
        self.input = SynthesisInput(w_dim, **first)
        self.layer_names = [p.name for p in self.plans]
        for plan in self.plans:
            setattr(self, plan.name, SynthesisLayer(plan, w_dim, conv_clamp=options["conv_clamp"]))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.input(w)
        for name in self.layer_names:
            x = getattr(self, name)(x, w)
        return x * self.output_scale if self.output_scale != 1 else x


def build_generator(spec) -> Generator:
    mapping, synthesis, w_dim = check_kwargs("stylegan3_nvlabs", spec, MAPPING_DEFAULTS, SYNTHESIS_DEFAULTS)
    mapping = {**MAPPING_DEFAULTS, **mapping}
    return Generator(Mapping(spec.latent_dim, spec.num_classes, w_dim, num_layers=mapping["num_layers"],
                             lr_multiplier=mapping["lr_multiplier"]),
                     SynthesisNetwork(w_dim, spec.height, spec.channels, **synthesis))


register(ModelFamily(
    name="stylegan3_nvlabs",
    description="NVlabs StyleGAN3 (configs T and R), imported from a snapshot",
    build_generator=build_generator,
    build_discriminator=None,
    has_truncation=True,
    supported_resolutions=(),
))
