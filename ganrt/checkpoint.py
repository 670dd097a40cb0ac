"""The checkpoint format: one ``.safetensors`` file, weights plus JSON metadata, no pickle anywhere.

Tensors are prefixed ``G.`` (generator), ``G_ema.`` (its exponential moving average, the one that is
exported) and ``D.`` (discriminator). The safetensors header's metadata holds one key, ``ganrt``, whose
value is a JSON object::

    {"format": "ganrt.checkpoint", "format_version": 1, "spec": {GeneratorSpec},
     "discriminator_config": {...}, "train_config": {...}, "step": int, "dataset": {...},
     "ganrt_version": "...", "created": "ISO-8601"}

Loading a file never runs code: the metadata is checked against :data:`METADATA_SCHEMA` (one-line
``CheckpointError``), and a user's module named in the spec (``factory``) is imported only when the caller
passes ``trust_code=True``. Writes are atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganrt import schema as S
from ganrt.errors import CheckpointError, SpecError
from ganrt.fileio import read_tensors_json, save_tensors_json
from ganrt.spec import GeneratorSpec

FORMAT = "ganrt.checkpoint"
FORMAT_VERSION = 1
PREFIXES = ("G.", "G_ema.", "D.")
METADATA_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "spec"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"const": FORMAT_VERSION},
        "spec": S.OBJECT,  # its fields: GeneratorSpec's own checks
        "discriminator_config": S.OBJECT,
        "train_config": S.OBJECT,
        "step": S.COUNT,
        "dataset": S.OBJECT,
        "extra": S.OBJECT,
        "ganrt_version": S.TEXT,
        "created": S.TEXT,
    },
}


@dataclass
class Checkpoint:
    spec: GeneratorSpec
    tensors: dict[str, Any]  # name -> torch.Tensor, with the G./G_ema./D. prefixes
    step: int = 0
    discriminator_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def state_dict(self, prefix: str) -> dict[str, Any]:
        """The tensors under ``prefix`` ("G", "G_ema" or "D") with the prefix removed."""
        p = prefix.rstrip(".") + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def has(self, prefix: str) -> bool:
        p = prefix.rstrip(".") + "."
        return any(k.startswith(p) for k in self.tensors)

    def metadata(self) -> dict[str, Any]:
        from ganrt import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "discriminator_config": self.discriminator_config,
            "train_config": self.train_config,
            "step": int(self.step),
            "dataset": self.dataset,
            "extra": self.extra,
            "ganrt_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically to ``path`` (a crash never leaves a torn file)."""
    bad = [k for k in checkpoint.tensors if not k.startswith(PREFIXES)]
    if bad:
        raise CheckpointError(f"checkpoint tensor names must start with {PREFIXES}, got {bad[:3]}")
    # clone: G and G_ema (or tied weights) may share storage, which safetensors refuses to write
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in checkpoint.tensors.items()}
    return save_tensors_json(path, tensors, checkpoint.metadata())


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's JSON metadata, validated, without reading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = read_tensors_json(path)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for torn or foreign files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e}); "
                              "ganrt checkpoints are written by `ganrt train`") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a ganrt checkpoint (no 'ganrt' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} is not supported "
                              f"(this ganrt reads version {FORMAT_VERSION}); upgrade ganrt")
    S.check(meta, METADATA_SCHEMA, where=f"{path}: checkpoint metadata", error=CheckpointError)
    return meta


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for anything else."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        spec = GeneratorSpec.from_dict(meta["spec"])
    except SpecError as e:
        raise CheckpointError(f"{path}: checkpoint has no valid GeneratorSpec ({e})") from None
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint tensors ({e}); the file may be truncated") from None
    return Checkpoint(spec=spec, tensors=tensors, step=meta.get("step", 0),
                      discriminator_config=meta.get("discriminator_config") or {},
                      train_config=meta.get("train_config") or {}, dataset=meta.get("dataset") or {},
                      extra=meta.get("extra") or {}, path=path)


def load_generator(path: str | os.PathLike, ema: bool = True, device: str = "cpu", *, trust_code: bool = False):
    """Rebuild the generator from a checkpoint alone: ``(torch.nn.Module in eval mode, GeneratorSpec)``.

    ``ema=True`` takes the EMA weights (``G_ema.``) when the checkpoint has them, else ``G.``. The module is
    called as ``G(z, labels=None, truncation=None)`` whatever it is (ganrt.models.as_ganrt_generator).
    A user's module (spec ``arch: external``) is rebuilt by importing the code its spec names: only with
    ``trust_code=True``; otherwise CheckpointError says so, before anything is imported.
    """
    from ganrt.models import build_generator

    ckpt = read_checkpoint(path)
    prefix = "G_ema" if ema and ckpt.has("G_ema") else "G"
    state = ckpt.state_dict(prefix)
    if not state:
        raise CheckpointError(f"{path}: checkpoint holds no generator weights ({prefix}.*)")
    try:
        gen = build_generator(ckpt.spec, trust_code=trust_code)
    except SpecError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild {ckpt.spec.arch!r} from its spec ({e})") from None
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the {ckpt.spec.arch!r} generator its spec describes "
                              f"({first})") from None
    return gen.to(device).eval(), ckpt.spec
