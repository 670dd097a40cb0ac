"""Regularizers of the discriminator and generator: R1, WGAN-GP gradient penalty, feature matching.

The penalties differentiate D's output with respect to its input (``create_graph=True``). Under fp16 mixed
precision that gradient is taken of the loss times the gradient scaler's ``scale`` (so small values do not
underflow in half precision) and divided by it again, as in PyTorch's AMP recipe for gradient penalties;
``scale=1`` (fp32, bf16) takes the plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ganrt.train.noise import BatchNoise, as_batch_noise


def _input_grad(outputs: torch.Tensor, inputs: torch.Tensor, scale: float) -> torch.Tensor:
    total = outputs.float().sum()
    if scale != 1.0:
        total = total * scale
    (grad,) = torch.autograd.grad(total, inputs, create_graph=True)
    grad = grad.float()
    return grad / scale if scale != 1.0 else grad


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real data. ``real`` must require grad and
    ``real_logits`` must have been computed from it. Multiply by gamma / 2 (and by k when lazy)."""
    grad = _input_grad(real_logits, real, scale)
    return grad.square().flatten(1).sum(dim=1).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | BatchNoise | None = None, scale: float = 1.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake.
    ``critic`` maps images to logits (close over the labels for a conditional D)."""
    eps = as_batch_noise(generator).rand((real.shape[0], 1, 1, 1), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    grad = _input_grad(critic(x_hat), x_hat, scale)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016: || E f(x) - E f(G(z)) ||^2 over D's last hidden features, (B, F) each.
    Real features are a target only (detached). In a multi-process run the means are per rank's batch."""
    return (real_features.detach().float().mean(dim=0) - fake_features.float().mean(dim=0)).square().mean()
