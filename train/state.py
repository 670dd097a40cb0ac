"""Resume state beside a checkpoint: ``checkpoint.optim.safetensors`` -- optimiser state, RNG states, step.

Tensors are named ``opt.<optimizer>.<param index>.<key>`` and ``rng.<name>``; everything else (param
groups, non-tensor state, the trainer's extra state) is JSON in the safetensors metadata under ``ganrt``.
No pickle: ``torch.optim`` state dicts are flattened here and rebuilt on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ganrt.errors import CheckpointError
from ganrt.fileio import load_tensors_json, save_tensors_json

FORMAT = "ganrt.train-state"
FORMAT_VERSION = 1


def save_train_state(path: str | os.PathLike, *, step: int, optimizers: dict[str, torch.optim.Optimizer],
                     rng: dict[str, torch.Tensor], extra_state: dict[str, Any]) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
                            "optimizers": {}, "extra_state": extra_state}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pidx, pstate in sd["state"].items():
            for key, value in pstate.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{name}.{pidx}.{key}"] = value.detach().cpu().clone().contiguous()
                else:
                    scalars.setdefault(str(pidx), {})[key] = value
        meta["optimizers"][name] = {"type": type(opt).__name__, "param_groups": sd["param_groups"],
                                    "scalars": scalars}
    for name, state in rng.items():
        tensors[f"rng.{name}"] = state.detach().cpu().clone()
    return save_tensors_json(path, tensors, meta)


def load_train_state(path: str | os.PathLike, optimizers: dict[str, torch.optim.Optimizer]
                     ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Load optimiser state into ``optimizers``; returns (step, rng states, extra state)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: --resume needs the optimiser state written beside "
                              "checkpoint.safetensors; start a new run instead")
    try:
        tensors, raw = load_tensors_json(path)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated") from None
    try:
        meta = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not ganrt optimiser state (expected metadata format {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: optimiser state version {meta.get('format_version')} is not supported "
                              f"(this ganrt reads {FORMAT_VERSION})")
    saved = meta.get("optimizers", {})
    if set(saved) != set(optimizers):
        raise CheckpointError(f"{path} holds optimisers {sorted(saved)}, this trainer has {sorted(optimizers)}")
    for name, opt in optimizers.items():
        info = saved[name]
        if info.get("type") != type(opt).__name__:
            raise CheckpointError(f"{path}: optimiser {name!r} is {info.get('type')}, expected {type(opt).__name__}")
        state: dict[int, dict[str, Any]] = {}
        prefix = f"opt.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                pidx, skey = key[len(prefix):].split(".", 1)
                state.setdefault(int(pidx), {})[skey] = value
        for pidx, values in info.get("scalars", {}).items():
            state.setdefault(int(pidx), {}).update(values)
        params = [p for g in opt.param_groups for p in g["params"]]
        for pidx, values in state.items():
            shapes = {k: tuple(v.shape) for k, v in values.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
            if pidx >= len(params) or any(s != tuple(params[pidx].shape) for s in shapes.values()):
                raise CheckpointError(f"{path}: optimiser {name!r} state does not fit this model's parameters "
                                      f"(parameter {pidx}); was it written by another run?")
        groups = info["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        try:
            opt.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimiser {name!r} state does not fit this model ({e})") from None
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return int(meta["step"]), rng, meta.get("extra_state") or {}
