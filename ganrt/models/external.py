"""A user's own generator module in ganrt's calling convention (imported only by callers of torch).

ganrt calls every generator as ``G(z, labels=None, truncation=None)``. A user's module takes only the inputs
it has, in order: ``(z)``, ``(z, labels)`` when conditional, ``(z, labels, truncation)`` or ``(z, truncation)``
as its spec says, in the forms its spec names (ganrt.spec: z as [B, latent_dim, 1, 1], labels as a one-hot
vector, a fixed Python-number truncation, NHWC images). :class:`UserModule` passes exactly those, so the torch
backend, the parity reference and the exported graph all call the module the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class UserModule(nn.Module):
    """``module`` called with the inputs its spec lists (spec.input_names), in the forms the spec names; returns
    (B, C, H, W) images; state dict keys unchanged."""

    def __init__(self, module: nn.Module, spec) -> None:
        super().__init__()
        self.module = module
        self.conditional = spec.num_classes > 0
        self.truncated = spec.has_truncation
        self.z_nchw = spec.z_layout == "nchw"
        self.one_hot = spec.num_classes if spec.labels_as == "one-hot" else 0
        self.fixed_truncation = spec.fixed_truncation
        self.nhwc = spec.output_layout == "nhwc"

    def forward(self, z, labels=None, truncation=None):
        args = [z[:, :, None, None] if self.z_nchw else z]
        if self.conditional:
            args.append(torch.nn.functional.one_hot(labels, self.one_hot).to(z.dtype) if self.one_hot else labels)
        if self.truncated:
            args.append(truncation)
        elif self.fixed_truncation is not None:
            args.append(self.fixed_truncation)
        images = self.module(*args)
        return images.permute(0, 3, 1, 2) if self.nhwc else images

    # the weights are the user's module's own: a bundle's generator.safetensors holds them without a prefix
    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
