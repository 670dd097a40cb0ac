"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, real and
fake, in both the D and the G step -- so D cannot overfit a small dataset and G still gets gradients.

Policies: "color" (brightness, saturation, contrast), "translation" (shift by up to 1/8 of the size,
zero padded), "cutout" (a zeroed square of half the size). Randomness comes from the ``generator``
passed in (a ``torch.Generator``, or a ``BatchNoise`` that draws for the global batch of a multi-process
run), so a seeded run is reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ganrt.train.noise import BatchNoise, as_batch_noise

Generator = torch.Generator | BatchNoise | None


def _rand(shape, x: torch.Tensor, generator: Generator) -> torch.Tensor:
    return as_batch_noise(generator).rand(shape, device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, shape, x: torch.Tensor, generator: Generator) -> torch.Tensor:
    return as_batch_noise(generator).randint(low, high, shape, device=x.device)


def color(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, generator) - 0.5)  # brightness
    if x.shape[1] > 1:  # saturation has no meaning for grayscale
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand((b, 1, 1, 1), x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, generator) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125, generator: Generator = None) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = _randint(-sh, sh + 1, (b, 1, 1), x, generator)
    ty = _randint(-sw, sw + 1, (b, 1, 1), x, generator)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H+2, W+2): out-of-range reads hit the zero border
    return padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: Generator = None) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = _randint(0, h + (1 - ch % 2), (b, 1, 1), x, generator)
    oy = _randint(0, w + (1 - cw % 2), (b, 1, 1), x, generator)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, device=x.device, dtype=x.dtype)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: Sequence[str], generator: Generator = None) -> torch.Tensor:
    """Apply each policy in order; an empty list returns ``x`` unchanged."""
    for name in policies:
        x = POLICIES[name](x, generator=generator)
    return x
