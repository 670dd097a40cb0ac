"""Resume state beside a checkpoint: ``checkpoint.optim.safetensors`` -- optimiser state, RNG states, step.

Tensors are named ``opt.<optimizer>.<param index>.<key>`` and ``rng.<name>``; everything else (param
groups, non-tensor state, the trainer's extra state, gradient-scaler state, the world size) is JSON in the
safetensors metadata under ``ganrt``. No pickle: ``torch.optim`` state dicts are flattened here and rebuilt
on load.

``CheckpointPair`` writes a checkpoint and its state so that a kill at any moment leaves one whole pair of
the same step (see its docstring); ``--resume`` continues from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganrt.errors import CheckpointError
from ganrt.fileio import load_tensors_json, read_tensors_json, save_tensors_json

FORMAT = "ganrt.train-state"
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.safetensors"
TRAIN_STATE = "checkpoint.optim.safetensors"
PREVIOUS_STATE = "checkpoint.optim.previous.safetensors"  # the committed state while its successor is written


@dataclass
class TrainState:
    step: int
    rng: dict[str, torch.Tensor]  # name -> RNG state ("torch", "trainer", "cuda", "torch.rank1", ...)
    extra_state: dict[str, Any]  # the trainer's own (Trainer.extra_state)
    grad_scalers: dict[str, Any] = field(default_factory=dict)  # fp16 GradScaler state per optimizer
    world_size: int = 1  # processes of the run that wrote it


def save_train_state(path: str | os.PathLike, *, step: int, optimizers: dict[str, torch.optim.Optimizer],
                     rng: dict[str, torch.Tensor], extra_state: dict[str, Any],
                     grad_scalers: dict[str, Any] | None = None, world_size: int = 1) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
                            "optimizers": {}, "extra_state": extra_state, "grad_scalers": grad_scalers or {},
                            "world_size": int(world_size)}
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


def _read_meta(path: Path, tensors: bool) -> tuple[dict, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: --resume needs the optimiser state written beside "
                              "checkpoint.safetensors; start a new run instead")
    try:
        loaded, raw = load_tensors_json(path) if tensors else ({}, read_tensors_json(path))
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
    return loaded, meta


def read_state_step(path: str | os.PathLike) -> int | None:
    """The step of an optimiser-state file from its header alone; None when it is missing or unreadable."""
    try:
        return int(_read_meta(Path(path), tensors=False)[1]["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def load_train_state(path: str | os.PathLike, optimizers: dict[str, torch.optim.Optimizer]) -> TrainState:
    """Load optimiser state into ``optimizers``; returns the rest (step, RNG states, extra state...)."""
    path = Path(path)
    tensors, meta = _read_meta(path, tensors=True)
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
    return TrainState(step=int(meta["step"]), rng=rng, extra_state=meta.get("extra_state") or {},
                      grad_scalers=meta.get("grad_scalers") or {}, world_size=int(meta.get("world_size", 1)))


class CheckpointPair:
    """``checkpoint.safetensors`` and the optimiser state of the same step, replaced together.

    Each file is written atomically, but two files cannot be replaced in one step, so the committed state
    is kept until its successor pair is whole:

    1. if ``checkpoint.optim.safetensors`` is the committed checkpoint's state, rename it to
       ``checkpoint.optim.previous.safetensors`` (else it is a newer state whose checkpoint never landed,
       and the committed one is already the previous one);
    2. write the new state to ``checkpoint.optim.safetensors``;
    3. write the new checkpoint -- the commit point;
    4. delete the previous state.

    A kill anywhere leaves the committed checkpoint with its state in one of the two files, and ``state_for``
    finds it by step: ``--resume`` continues from the last step whose checkpoint write completed.
    """

    def __init__(self, out: Path) -> None:
        self.checkpoint = out / CHECKPOINT
        self.state = out / TRAIN_STATE
        self.previous = out / PREVIOUS_STATE

    def committed_step(self) -> int | None:
        from ganrt.checkpoint import read_metadata

        try:
            return int(read_metadata(self.checkpoint)["step"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return None

    def save(self, write_state: Callable[[Path], Any], write_checkpoint: Callable[[Path], Any]) -> None:
        committed = self.committed_step()
        if committed is not None and read_state_step(self.state) == committed:
            os.replace(self.state, self.previous)
        write_state(self.state)
        write_checkpoint(self.checkpoint)
        self.previous.unlink(missing_ok=True)

    def state_for(self, step: int) -> Path:
        """The optimiser-state file of ``step`` (the checkpoint's); a CheckpointError when neither holds it."""
        found = {p: read_state_step(p) for p in (self.state, self.previous) if p.exists()}
        for path, s in found.items():
            if s == step:
                return path
        unreadable = [p for p, s in found.items() if s is None]
        if not found or unreadable:
            return unreadable[0] if unreadable else self.state  # load_train_state says what is wrong with it
        seen = ", ".join(f"{p.name}: step {s}" for p, s in found.items())  # none unreadable by now
        raise CheckpointError(f"no optimiser state of step {step} (the step of {self.checkpoint}) beside it "
                              f"({seen}); the files were changed by hand or by another program")
