"""A user's own generator module in ganrt's calling convention (imported only by callers of torch).

ganrt calls every generator as ``G(z, labels=None, truncation=None)``. A user's module takes only the inputs
it has, in order: ``(z)``, ``(z, labels)`` when conditional, ``(z, labels, truncation)`` or ``(z, truncation)``
as its spec says. :class:`UserModule` passes exactly those, so the torch backend, the parity reference and
the exported graph all call the module the same way.
"""

from __future__ import annotations

from torch import nn


class UserModule(nn.Module):
    """``module`` called with the inputs its spec lists (spec.input_names); state dict keys unchanged."""

    def __init__(self, module: nn.Module, spec) -> None:
        super().__init__()
        self.module = module
        self.conditional = spec.num_classes > 0
        self.truncated = spec.has_truncation

    def forward(self, z, labels=None, truncation=None):
        args = [z] + ([labels] if self.conditional else []) + ([truncation] if self.truncated else [])
        return self.module(*args)

    # the weights are the user's module's own: a bundle's generator.safetensors holds them without a prefix
    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
