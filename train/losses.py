"""Adversarial losses. Each takes D's logits and returns a scalar to minimise.

``d_loss(real_logits, fake_logits)`` for the discriminator, ``g_loss(fake_logits)`` for the generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ganrt.errors import ConfigError


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    gradient_penalty: bool = False  # WGAN-GP: add regularizers.gradient_penalty to D's loss


def _ns_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # -log sigmoid(real) - log(1 - sigmoid(fake)), written with softplus for stability
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _ns_g(fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()  # non-saturating: maximise log D(G(z))


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _linear_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


LOSSES: dict[str, AdversarialLoss] = {
    "nonsaturating": AdversarialLoss("nonsaturating", _ns_d, _ns_g),
    "hinge": AdversarialLoss("hinge", _hinge_d, _linear_g),
    "wgan": AdversarialLoss("wgan", _wgan_d, _linear_g),
    "wgan-gp": AdversarialLoss("wgan-gp", _wgan_d, _linear_g, gradient_penalty=True),
}


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ConfigError(f"unknown adversarial loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]
