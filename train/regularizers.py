"""Regularizers of the discriminator and generator: R1, WGAN-GP gradient penalty, feature matching."""

from __future__ import annotations

from collections.abc import Callable

import torch


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real data. ``real`` must require grad and
    ``real_logits`` must have been computed from it. Multiply by gamma / 2 (and by k when lazy)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake.
    ``critic`` maps images to logits (close over the labels for a conditional D)."""
    eps = torch.rand((real.shape[0], 1, 1, 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016: || E f(x) - E f(G(z)) ||^2 over D's last hidden features, (B, F) each.
    Real features are a target only (detached)."""
    return (real_features.detach().mean(dim=0) - fake_features.mean(dim=0)).square().mean()
