"""NVlabs' StyleGAN2 generator (config F; the StyleGAN2-ADA and StyleGAN3 repositories' ``stylegan2``),
reproduced in plain tensor code so that an imported snapshot draws NVlabs' images exactly in fp32.

Built by ``ganrt import nvlabs`` from a snapshot (``ganrt.importers.nvlabs``), never trained here. Its
module and tensor names are the snapshot's (``mapping.fc0.weight``, ``synthesis.b64.conv0.noise_const``,
...), so the snapshot's weights load by name.

The network (Karras et al. 2020): a mapping MLP (z, and the label's embedding, each normalized) -> w; the
truncation trick toward ``w_avg`` (one psi per image, an input of the graph); a learned 4x4 constant; per
resolution a block of modulated 3x3 convolutions (weight demodulation), the first upsampling x2 through a
transposed convolution followed by the [1, 3, 3, 1] FIR filter, constant noise scaled by its learned
strength, bias, leaky ReLU times sqrt(2), and activations clamped to +-``conv_clamp``; ToRGB layers
(modulated 1x1, no demodulation) whose outputs are upsampled with the same filter and summed ("skip"
architecture; "orig" and "resnet" are supported too). noise_mode is NVlabs' 'const': the stored noise.

Export form: the modulated convolution scales the activations by the style, convolves with the weight the
batch shares, and scales the result by the demodulation coefficients (NVlabs' "fused" form, a grouped
convolution over the batch, computes the same numbers but bakes the batch size into the graph). Every
layer takes the same w: the graph's inputs (z, labels, truncation) give one w per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register
from ganrt.models.nvlabs_layers import (
    ACTIVATIONS,
    FullyConnected,
    Generator,
    Mapping,
    bias_act,
    check_kwargs,
    fir_filter,
    upfirdn2d,
)

ARCHITECTURES = ("skip", "orig", "resnet")
HALF_POWER = math.sqrt(0.5)  # resnet: both branches scaled so that their sum keeps the variance of one


def upsample_filtered(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``x`` upsampled ``up`` times through the FIR filter ``f``, the filter centred on the new samples: the
    output is exactly ``up`` times the input, its DC gain kept."""
    taps = int(f.shape[-1])
    lead = (taps + up - 1) // 2
    trail = taps - 1 - lead
    return upfirdn2d(x, f, up=up, padding=(lead, trail, lead, trail), gain=up * up)


def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``weight`` (O, I, k, k) convolved (true convolution) with ``x`` upsampled ``up`` times through FIR ``f``:
    the output is ``up`` times the input.

    The reference order is: insert zeros, pad by ``lead = k//2 + (taps + up - 1)//2`` before and ``trail =
    k//2 + (taps - up)//2`` after, filter with f (gain up**2), convolve with the weight without padding. The
    filter and the convolution are both shift-invariant, so they commute: the weight goes first, as a transposed
    convolution with stride ``up`` on the small image (the zeros never multiplied). That output is the
    convolution of the zero-inserted image at full length, which starts k - 1 samples before the padded one
    and ends k - up samples past the unpadded one: the filter's padding is the reference's less those.
    """
    k, taps = int(weight.shape[-1]), int(f.shape[-1])
    lead = k // 2 + (taps + up - 1) // 2 - (k - 1)
    trail = k // 2 + (taps - up) // 2 - (k - up)
    y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up)
    return upfirdn2d(y, f, padding=(lead, trail, lead, trail), gain=up * up)


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                   up_filter: torch.Tensor | None = None, up: int = 1) -> torch.Tensor:
    """Each image's input channels scaled by its ``styles`` (B, I), the shared ``weight`` applied ("same"
    padding; upsampled through ``up_filter`` when ``up`` > 1), and, to demodulate, each output channel divided
    by the norm its modulated weight would have: sqrt(sum over I, k, k of (weight * style)^2)."""
    y = x * styles.reshape(*styles.shape, 1, 1)
    if up > 1:
        y = upsampled_conv(y, weight, up_filter, up)
    else:
        y = F.conv2d(y, weight, padding=int(weight.shape[-1]) // 2)
    if not demodulate:
        return y
    norms = styles.square() @ weight.square().sum(dim=(2, 3)).t()  # (B, O)
    return y * (norms + 1e-8).rsqrt().reshape(*norms.shape, 1, 1)


def scaled_clamp(clamp: float | None, gain: float) -> float | None:
    return None if clamp is None else clamp * gain


@dataclass(frozen=True)
class LayerConfig:
    """What a StyleGAN2 synthesis layer is built with (the snapshot's attributes of the same names)."""

    up: int = 1
    use_noise: bool = True
    activation: str = "lrelu"
    conv_clamp: float | None = None
    kernel_size: int = 3


class SynthesisLayer(nn.Module):
    """[up x2] modulated k x k conv (demodulated), plus the stored noise times its strength, bias, activation
    times its gain, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, config: LayerConfig,
                 resample_filter=(1, 3, 3, 1)) -> None:
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"activation {config.activation!r} is not one of {list(ACTIVATIONS)}")
        self.config = config
        k = config.kernel_size
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = FullyConnected(w_dim, in_channels)
        self.register_buffer("resample_filter", fir_filter(resample_filter))
        if config.use_noise:
            self.noise_strength = nn.Parameter(torch.zeros(()))
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        c = self.config
        x = modulated_conv(x, self.weight, self.affine(w), demodulate=True, up_filter=self.resample_filter,
                           up=c.up)
        if c.use_noise:
            x = x + self.noise_strength * self.noise_const
        return bias_act(x, self.bias, c.activation, gain=gain * ACTIVATIONS[c.activation][1],
                        clamp=scaled_clamp(c.conv_clamp, gain))


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv, not demodulated (its styles scaled by 1/sqrt(fan-in) instead), bias, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = FullyConnected(w_dim, in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rgb = modulated_conv(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(rgb, self.bias, clamp=self.conv_clamp)


class SkipConv(nn.Module):
    """The resnet architecture's shortcut: an equalized-lr 1x1 conv, upsampled x2 through the block's filter."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter=(1, 3, 3, 1)) -> None:
        super().__init__()
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.register_buffer("resample_filter", fir_filter(resample_filter))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsampled_conv(x, self.weight * self.weight_gain, self.resample_filter) * HALF_POWER


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network.

    Features: the learned constant (4x4 block) or the previous block's features upsampled by ``conv0``, then
    ``conv1``; with "resnet", a 1x1 shortcut around the two, both halves scaled by sqrt(1/2). Image: the previous
    block's image upsampled, plus this block's ToRGB ("skip"; "orig" and "resnet" draw only the last block's).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, kernel_size: int = 3, use_noise: bool = True,
                 activation: str = "lrelu") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.architecture = architecture
        self.has_torgb = is_last or architecture == "skip"
        self.residual = architecture == "resnet" and in_channels > 0
        config = LayerConfig(use_noise=use_noise, activation=activation, conv_clamp=conv_clamp,
                             kernel_size=kernel_size)
        self.register_buffer("resample_filter", fir_filter(resample_filter))
        if in_channels:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, replace(config, up=2),
                                        resample_filter)
        else:
            self.const = nn.Parameter(torch.zeros(out_channels, resolution, resolution))
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, config, resample_filter)
        if self.residual:
            self.skip = SkipConv(in_channels, out_channels, resample_filter)
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def features(self, x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        if not self.in_channels:
            return self.conv1(self.const.expand(w.shape[0], -1, -1, -1), w)
        main = self.conv1(self.conv0(x, w), w, gain=HALF_POWER if self.residual else 1.0)
        return main + self.skip(x) if self.residual else main

    def image(self, img: torch.Tensor | None, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        previous = None if img is None else upsample_filtered(img, self.resample_filter)
        if not self.has_torgb:
            return previous
        rgb = self.torgb(x, w)
        return rgb if previous is None else previous + rgb

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, w: torch.Tensor):
        x = self.features(x, w)
        return x, self.image(img, x, w)


class SynthesisNetwork(nn.Module):
    """Blocks at 4, 8, ..., ``img_resolution``; block r has min(channel_base / r, channel_max) channels."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, **block_kwargs) -> None:
        super().__init__()
        self.resolutions = [4 << i for i in range(int(math.log2(img_resolution)) - 1)]
        previous = 0
        for r in self.resolutions:
            width = min(channel_base // r, channel_max)
            setattr(self, f"b{r}", SynthesisBlock(previous, width, w_dim, r, img_channels,
                                                  is_last=r == img_resolution, **block_kwargs))
            previous = width

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = img = None
        for r in self.resolutions:
            x, img = getattr(self, f"b{r}")(x, img, w)
        return img


MAPPING_KWARGS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier")
SYNTHESIS_KWARGS = ("channel_base", "channel_max", "architecture", "resample_filter", "conv_clamp", "kernel_size",
                    "use_noise", "activation")


def build_generator(spec) -> Generator:
    mapping, synthesis, w_dim = check_kwargs("stylegan2_nvlabs", spec, MAPPING_KWARGS, SYNTHESIS_KWARGS)
    if synthesis.get("architecture", "skip") not in ARCHITECTURES:
        raise ValueError(f"StyleGAN2 architecture must be one of {ARCHITECTURES}, got {synthesis['architecture']!r}")
    if spec.height < 4 or spec.height & (spec.height - 1):
        raise ValueError(f"StyleGAN2 resolutions are powers of two >= 4, got {spec.height}")
    return Generator(Mapping(spec.latent_dim, spec.num_classes, w_dim, **mapping),
                     SynthesisNetwork(w_dim, spec.height, spec.channels, **synthesis))


register(ModelFamily(
    name="stylegan2_nvlabs",
    description="NVlabs StyleGAN2 (StyleGAN2-ADA / StyleGAN3 repositories), imported from a snapshot",
    build_generator=build_generator,
    build_discriminator=None,
    has_truncation=True,
    supported_resolutions=(),
))
