"""Mixed precision of a training step: autocast regions and, for fp16, one gradient scaler per optimizer.

``fp32`` (the default) changes nothing. ``bf16`` runs forward passes under ``torch.autocast`` in bfloat16
(CUDA and CPU; bfloat16 has float32's range, so no scaler). ``fp16`` runs them in float16 and scales each
loss with its own ``torch.amp.GradScaler("cuda")`` (G and D see gradients of very different size), which
skips a step whose gradients overflowed and adapts the scale; CUDA only. Backward passes and optimizer
steps run outside autocast, losses are reduced in float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ganrt.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, device_type: str) -> None:
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "fp16" and device_type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device (float16 training with a gradient scaler); on "
                          f"{device_type} use --precision bf16 or fp32")


class Precision:
    def __init__(self, name: str, device: torch.device) -> None:
        check_precision(name, device.type)
        self.name = name
        self.device = device
        self.dtype = PRECISIONS[name]
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        if self.name != "fp16":
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(self.device.type)
        return self.scalers[name]

    def grad_scale(self, name: str) -> float:
        """The factor a loss of optimizer ``name`` is multiplied by before backward (1 without fp16)."""
        scaler = self.scaler(name)
        return float(scaler.get_scale()) if scaler is not None else 1.0

    def optimize(self, name: str, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """zero_grad, backward of ``loss`` (scaled under fp16) and the optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler(name)
        if scaler is None:
            loss.backward()
            optimizer.step()
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state of the gradient scalers (empty without fp16), saved for an exact resume."""
        return {name: s.state_dict() for name, s in self.scalers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, values in state.items():
            scaler = self.scaler(name)
            if scaler is not None:
                scaler.load_state_dict(values)
