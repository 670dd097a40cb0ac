"""StyleGAN2-style generator (Karras et al. 2020), small and export-friendly, and its residual discriminator.

G: a mapping MLP (z [+ label embedding] -> w; equalized lr with lr multiplier 0.01; a tracked ``w_avg``),
a learned constant 4x4 input, modulated 3x3 convolutions with demodulation, per-layer noise with learned
strengths, skip-to-RGB outputs summed across resolutions, style mixing while training, and the truncation
trick as a generator INPUT: ``truncation`` (B,) float32 psi, ``w = w_avg + psi * (w - w_avg)``.

Export notes:
- Modulated convolution is written in the non-fused form (scale the activations by the style, convolve with
  the shared weight, scale the output by the demodulation coefficient). The fused grouped-conv form
  (groups=batch) bakes the batch size into the weights and breaks a dynamic batch axis.
- Noise is a buffer per layer: fresh noise while training, the stored buffer in eval mode, so the exported
  graph is deterministic. Upsampling is bilinear x2 (half-pixel), i.e. the [1, 3, 3, 1] filter.
- Output is linear while training (as in StyleGAN2) and clamped to [-1, 1] in eval mode.

D: residual blocks of equalized-lr convolutions, minibatch stddev, optional minibatch discrimination, and a
projection term for labels when conditional. R1 (lazy) is a training-loop option.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ganrt.models import ModelFamily, register, square_generator_kwargs
from ganrt.models.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchDiscrimination,
    MinibatchStdDev,
    doubling_levels,
    unit_rms,
)

SQRT2 = math.sqrt(2.0)


def channels_at(level: int, levels: int, width: int, max_width: int) -> int:
    """Feature channels at 4 * 2**level: ``width`` at full resolution, doubling per halving, capped."""
    return min(width * 2 ** (levels - level), max_width)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * SQRT2  # gain keeps the activation variance ~1


class MappingNetwork(nn.Module):
    def __init__(self, latent_dim: int, w_dim: int, num_layers: int = 4, num_classes: int = 0,
                 embed_dim: int = 32, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_dim = latent_dim
        if num_classes:
            self.embed = nn.Embedding(num_classes, embed_dim)
            nn.init.normal_(self.embed.weight)
            in_dim += embed_dim
        dims = [in_dim] + [w_dim] * num_layers
        self.fcs = nn.ModuleList(EqualizedLinear(dims[i], dims[i + 1], lr_mul=lr_mul) for i in range(num_layers))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:  # -> (B, w_dim)
        x = unit_rms(z)
        if self.num_classes:
            x = torch.cat([x, unit_rms(self.embed(labels))], dim=1)
        for fc in self.fcs:
            x = _lrelu(fc(x))
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0) -> torch.Tensor:
    """x (B, I, H, W), weight (O, I, k, k) shared by the batch, styles (B, I) -> (B, O, H, W).

    Non-fused: equal to convolving each sample with weight * style (then normalizing each output channel to
    unit norm when ``demodulate``), but the conv weight does not depend on the batch.
    """
    x = x * styles[:, :, None, None]
    x = F.conv2d(x, weight, padding=padding)
    if demodulate:
        # sum_{i,k} (w_oik * s_i)^2 = s^2 @ sum_k w_oik^2   -> (B, O)
        d = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
        x = x * d[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """[bilinear x2 up] -> modulated 3x3 conv -> + noise * strength -> + bias -> lrelu."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.up = up
        self.affine = EqualizedLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_ch * 9)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=True, padding=1)
        if self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const  # fixed: the exported graph holds it as a constant
        x = x + noise * self.noise_strength
        return _lrelu(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, linear output."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> (B, C, H, W). w index: each conv takes its own; a block's ToRGB takes the
    index of the next block's first conv (as in StyleGAN2), the last ToRGB the last index."""

    def __init__(self, w_dim: int, channels: int, resolution: int, width: int, max_width: int) -> None:
        super().__init__()
        self.levels = doubling_levels(resolution, "StyleGAN")
        ch = [channels_at(i, self.levels, width, max_width) for i in range(self.levels + 1)]
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.conv4 = SynthesisLayer(ch[0], ch[0], w_dim, 4)
        self.rgb4 = ToRGB(ch[0], channels, w_dim)
        self.convs = nn.ModuleList()
        self.rgbs = nn.ModuleList()
        for i in range(1, self.levels + 1):
            res = 4 * 2**i
            self.convs.append(SynthesisLayer(ch[i - 1], ch[i], w_dim, res, up=True))
            self.convs.append(SynthesisLayer(ch[i], ch[i], w_dim, res))
            self.rgbs.append(ToRGB(ch[i], channels, w_dim))
        self.num_ws = 2 + 2 * self.levels

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1)  # (B, ch0, 4, 4)
        x = self.conv4(x, ws[:, 0])
        img = self.rgb4(x, ws[:, 1])
        for i in range(self.levels):
            x = self.convs[2 * i](x, ws[:, 1 + 2 * i])
            x = self.convs[2 * i + 1](x, ws[:, 2 + 2 * i])
            img = F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False)
            img = img + self.rgbs[i](x, ws[:, 3 + 2 * i])
        return img


class StyleGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, resolution: int, num_classes: int = 0, w_dim: int = 128,
                 mapping_layers: int = 4, mapping_lr_mul: float = 0.01, width: int = 32, max_width: int = 256,
                 embed_dim: int = 32, w_avg_beta: float = 0.995, mixing_prob: float = 0.9) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.w_avg_beta = w_avg_beta
        self.mixing_prob = mixing_prob
        self.mapping = MappingNetwork(latent_dim, w_dim, mapping_layers, num_classes, embed_dim, mapping_lr_mul)
        self.synthesis = SynthesisNetwork(w_dim, channels, resolution, width, max_width)
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mapping(z, labels)  # (B, w_dim)
        if self.training:
            with torch.no_grad():  # track the centre of W for the truncation trick
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation is not None:
            w = self.w_avg + truncation.reshape(-1, 1) * (w - self.w_avg)
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)  # (B, num_ws, w_dim)
        if self.training and self.mixing_prob > 0 and torch.rand(()) < self.mixing_prob:
            # style mixing: layers from a random cutoff on take the w of another latent
            cutoff = int(torch.randint(1, self.num_ws, ()))
            w2 = self.mapping(torch.randn_like(z), labels)
            ws = torch.cat([ws[:, :cutoff], w2.unsqueeze(1).expand(-1, self.num_ws - cutoff, -1)], dim=1)
        img = self.synthesis(ws)
        return img if self.training else img.clamp(-1.0, 1.0)


class DiscriminatorBlock(nn.Module):
    """Residual: (conv3x3 -> lrelu -> conv3x3 -> lrelu -> avgpool) + (avgpool -> conv1x1), scaled by 1/sqrt2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3)
        self.skip = EqualizedConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)
        return (x + y) * (1.0 / SQRT2)


class StyleGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int = 0, width: int = 32, max_width: int = 256,
                 minibatch_stddev: bool = True, mbstd_group: int = 4, minibatch_discrimination: bool = False,
                 mbd_kernels: int = 16) -> None:
        super().__init__()
        levels = doubling_levels(resolution, "StyleGAN")
        ch = [channels_at(i, levels, width, max_width) for i in range(levels + 1)]
        self.from_rgb = EqualizedConv2d(channels, ch[levels], 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[i], ch[i - 1]) for i in range(levels, 0, -1)])
        self.mbstd = MinibatchStdDev(mbstd_group) if minibatch_stddev else None
        self.conv = EqualizedConv2d(ch[0] + (1 if minibatch_stddev else 0), ch[0], 3)
        self.fc = EqualizedLinear(ch[0] * 16, ch[0])
        self.mbd = MinibatchDiscrimination(ch[0], mbd_kernels) if minibatch_discrimination else None
        self.out = EqualizedLinear(ch[0] + (mbd_kernels if minibatch_discrimination else 0), 1)
        self.num_classes = num_classes
        if num_classes:
            self.embed = nn.Embedding(num_classes, ch[0])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_features: bool = False):
        h = self.blocks(_lrelu(self.from_rgb(x)))  # (B, ch0, 4, 4)
        if self.mbstd is not None:
            h = self.mbstd(h)
        feats = _lrelu(self.fc(_lrelu(self.conv(h)).flatten(1)))  # (B, ch0)
        logits = self.out(self.mbd(feats) if self.mbd is not None else feats).squeeze(1)
        if self.num_classes:  # projection discriminator
            logits = logits + (self.embed(labels) * feats).sum(dim=1) / math.sqrt(feats.shape[1])
        return (logits, feats) if return_features else logits


GENERATOR_KWARGS = ("w_dim", "mapping_layers", "mapping_lr_mul", "width", "max_width", "embed_dim", "w_avg_beta",
                    "mixing_prob")


def build_generator(spec) -> StyleGANGenerator:
    kw = square_generator_kwargs(spec, "StyleGAN", GENERATOR_KWARGS)
    return StyleGANGenerator(spec.latent_dim, spec.channels, spec.height, num_classes=spec.num_classes, **kw)


def build_discriminator(spec, minibatch_stddev: bool = True, minibatch_discrimination: bool = False,
                        width: int | None = None, **_ignored) -> StyleGANDiscriminator:
    kw = spec.arch_kwargs
    return StyleGANDiscriminator(spec.channels, spec.height, num_classes=spec.num_classes,
                                 width=width or kw.get("width", 32), max_width=kw.get("max_width", 256),
                                 minibatch_stddev=minibatch_stddev, minibatch_discrimination=minibatch_discrimination)


def default_kwargs(resolution: int) -> dict:
    return {"w_dim": 128, "mapping_layers": 4, "mapping_lr_mul": 0.01, "width": 32, "max_width": 256,
            "embed_dim": 32, "w_avg_beta": 0.995, "mixing_prob": 0.9}


register(ModelFamily(
    name="stylegan",
    description="StyleGAN2-style: mapping net, modulated convs, noise, skip-to-RGB, truncation input",
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    default_kwargs=default_kwargs,
    has_truncation=True,
    supported_resolutions=(16, 32, 64, 128, 256),
    default_loss="nonsaturating",
))
