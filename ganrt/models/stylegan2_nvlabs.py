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


def upsample_filtered(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """x2 upsampling with FIR filter ``f`` (output exactly ``up`` times the input; DC gain kept)."""
    fw = int(f.shape[-1])
    pad = ((fw + up - 1) // 2, (fw - up) // 2)
    return upfirdn2d(x, f, up=up, padding=(pad[0], pad[1], pad[0], pad[1]), gain=up * up)


def conv_up(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """``weight`` (O, I, k, k) applied to ``x`` upsampled ``up`` times with FIR filter ``f``, padded to keep
    the output at ``up`` times the input: a strided transposed convolution, then the filter."""
    k = int(weight.shape[-1])
    if k == 1:  # 1x1: convolve at the low resolution, then upsample
        return upsample_filtered(F.conv2d(x, weight), f, up)
    fw = int(f.shape[-1])
    before = k // 2 + (fw + up - 1) // 2 - (k - 1)  # padding of the upsampled image, less the transposed
    after = k // 2 + (fw - up) // 2 - (k - up)  # convolution's own growth on each side
    crop = max(min(-before, -after), 0)
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up, padding=crop)
    before, after = before + crop, after + crop
    return upfirdn2d(x, f, padding=(before, after, before, after), gain=up * up)


class SynthesisLayer(nn.Module):
    """[up x2] modulated kxk conv (demodulated) + noise * strength, bias, activation * gain, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {list(ACTIVATIONS)}")
        self.act_gain = ACTIVATIONS[activation][1]
        self.register_buffer("resample_filter", fir_filter(resample_filter))
        self.affine = FullyConnected(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)  # (B, I)
        x = x * styles[:, :, None, None]
        if self.up > 1:
            x = conv_up(x, self.weight, self.resample_filter, self.up)
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        # demodulation: 1 / |weight * style| per sample and output channel = rsqrt(style^2 @ sum_k weight^2)
        d = (styles.square() @ self.weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (B, O)
        x = x * d[:, :, None, None]
        if self.use_noise:
            x = x + self.noise_const * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (style scaled by 1/sqrt(fan-in)), bias, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnected(w_dim, in_channels)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None], self.weight, padding=self.padding)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SkipConv(nn.Module):
    """The resnet architecture's shortcut: equalized-lr 1x1 conv, upsampled x2 with the block's filter."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter=(1, 3, 3, 1)) -> None:
        super().__init__()
        self.register_buffer("resample_filter", fir_filter(resample_filter))
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = conv_up(x, self.weight * self.weight_gain, self.resample_filter)
        return x * gain if gain != 1 else x


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, kernel_size: int = 3, use_noise: bool = True,
                 activation: str = "lrelu") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.architecture = architecture
        self.register_buffer("resample_filter", fir_filter(resample_filter))
        layer = dict(w_dim=w_dim, resolution=resolution, kernel_size=kernel_size, use_noise=use_noise,
                     activation=activation, resample_filter=resample_filter, conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.zeros(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer)
        self.has_torgb = is_last or architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        if in_channels and architecture == "resnet":
            self.skip = SkipConv(in_channels, out_channels, resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, w: torch.Tensor):
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(w.shape[0], -1, -1, -1)
            x = self.conv1(x, w)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, w)
            x = y + self.conv1(x, w, gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x, w), w)
        if img is not None:
            img = upsample_filtered(img, self.resample_filter)
        if self.has_torgb:
            y = self.torgb(x, w)
            img = y if img is None else img + y
        return x, img


def block_resolutions(resolution: int) -> list[int]:
    return [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, **block_kwargs) -> None:
        super().__init__()
        self.resolutions = block_resolutions(img_resolution)
        channels = {res: min(channel_base // res, channel_max) for res in self.resolutions}
        for res in self.resolutions:
            setattr(self, f"b{res}", SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res,
                                                    img_channels, is_last=res == img_resolution, **block_kwargs))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = img = None
        for res in self.resolutions:
            x, img = getattr(self, f"b{res}")(x, img, w)
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
