"""The bundle format: a directory a user ships, described by ``manifest.json``.

    bundle/
      manifest.json          this module's format (below)
      generator.safetensors  reference weights (a ganrt checkpoint holding G_ema as G + the spec)
      model.fp32.onnx, model.fp16.onnx, model.int8.onnx, ...
      engines/<precision>.<sm>.trt<version>.plan
      timing.cache

manifest.json::

    {"format": "ganrt.bundle", "format_version": 1, "ganrt_version": str, "created": str,
     "spec": {GeneratorSpec},
     "graph": {"inputs": [{"name", "dtype", "shape"}], "outputs": [...], "output_format": "uint8-nhwc",
               "opset": int, "max_batch": int, "dynamic_axes": {...}},
     "source": {...how the reference was obtained...},
     "artifacts": {NAME: {"file": relative path, "kind": "weights"|"onnx"|"openvino-ir"|"engine"|"timing_cache"|"other",
                          "precision": "fp32"|"fp16"|"bf16"|"int8"|None, "sha256": hex, "size": bytes,
                          "made_by": {...}, "parity": {...}|None, "passed": bool|None, ...}},
     "benchmarks": {...}  optional: the bundle's own latest benchmark summary, used by backend="auto"}

The manifest is written last and atomically: a bundle whose manifest does not list a file does not
have that file, and a half-written export never looks complete. Opening a bundle checks every listed
artifact's sha256.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganrt.errors import BundleError, SpecError
from ganrt.fileio import atomic_path, atomic_write_json, sha256_file
from ganrt.precisions import NAMES
from ganrt.spec import GeneratorSpec

FORMAT = "ganrt.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "generator.safetensors"
ARTIFACT_KINDS = ("weights", "onnx", "openvino-ir", "engine", "timing_cache", "other")
PRECISIONS = NAMES  # ganrt.precisions


def onnx_artifact_name(precision: str, rewritten: bool = False) -> str:
    """Manifest name of an ONNX graph: 'onnx-fp32', 'onnx-fp16', ...; '-rw' marks a rewritten graph."""
    return f"onnx-{precision}" + ("-rw" if rewritten else "")


def onnx_file_name(precision: str, rewritten: bool = False) -> str:
    return f"model.{precision}" + (".rw" if rewritten else "") + ".onnx"


@dataclass
class Bundle:
    path: Path
    spec: GeneratorSpec
    graph: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    benchmarks: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str | None = None

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"bundle {path} does not exist or is not a directory; make one with `ganrt export`")
        if not manifest_path.is_file():
            raise BundleError(f"{path} has no {MANIFEST}: not a ganrt bundle, or its export did not finish")
        try:
            data = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{manifest_path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{manifest_path} is not a ganrt bundle manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{manifest_path}: bundle format version {data.get('format_version')} is not supported "
                              f"(this ganrt reads {FORMAT_VERSION}); re-export the bundle or upgrade ganrt")
        try:
            spec = GeneratorSpec.from_dict(data.get("spec"))
        except SpecError as e:
            raise BundleError(f"{manifest_path}: invalid spec ({e})") from None
        artifacts = data.get("artifacts") or {}
        if not isinstance(artifacts, dict):
            raise BundleError(f"{manifest_path}: 'artifacts' must be an object")
        bundle = cls(path=path, spec=spec, graph=data.get("graph") or {}, artifacts=artifacts,
                     source=data.get("source") or {}, benchmarks=data.get("benchmarks") or {},
                     extra=data.get("extra") or {}, created=data.get("created"))
        if verify:
            bundle.verify()
        return bundle

    def verify(self, names: list[str] | None = None) -> None:
        """Check that every listed artifact (or those in ``names``) exists with its recorded sha256."""
        for name in names or list(self.artifacts):
            entry = self.artifact(name)
            file = self.path / entry["file"]
            if not file.is_file():
                raise BundleError(f"bundle {self.path}: artifact {name!r} ({entry['file']}) is missing")
            digest = sha256_file(file)
            if digest != entry.get("sha256"):
                raise BundleError(f"bundle {self.path}: {entry['file']} does not match its recorded sha256 "
                                  f"(tampered or corrupted); re-export the bundle")

    def artifact(self, name: str) -> dict[str, Any]:
        if name not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise BundleError(f"bundle {self.path} has no artifact {name!r} (it has: {have})")
        return self.artifacts[name]

    def artifact_path(self, name: str) -> Path:
        return self.path / self.artifact(name)["file"]

    def find(self, *, kind: str | None = None, precision: str | None = None) -> dict[str, dict[str, Any]]:
        """Artifacts matching kind and/or precision, by name."""
        return {n: a for n, a in self.artifacts.items()
                if (kind is None or a.get("kind") == kind) and (precision is None or a.get("precision") == precision)}

    # -- writing ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, spec: GeneratorSpec, graph: dict[str, Any] | None = None,
               source: dict[str, Any] | None = None) -> "Bundle":
        """A new (or re-used) bundle directory; an existing manifest's artifacts are kept."""
        path = Path(path)
        if (path / MANIFEST).is_file():
            old = cls.open(path, verify=False)
            if old.spec != spec:
                raise BundleError(f"{path} already holds a bundle of another generator ({old.spec.arch}, "
                                  f"latent {old.spec.latent_dim}); export into a new directory")
            old.graph = graph or old.graph
            old.source = source or old.source
            return old
        if path.exists() and any(path.iterdir()):
            raise BundleError(f"{path} exists, is not empty and is not a ganrt bundle; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path=path, spec=spec, graph=graph or {}, source=source or {})

    def add_artifact(self, name: str, src: str | os.PathLike, *, file: str, kind: str,
                     precision: str | None = None, made_by: dict[str, Any] | None = None,
                     parity: dict[str, Any] | None = None, passed: bool | None = None,
                     **extra: Any) -> dict[str, Any]:
        """Move ``src`` into the bundle as ``file`` (atomically) and record it; call :meth:`save` after."""
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        dest = self.path / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = Path(src)
        if src.resolve() != dest.resolve():
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        entry = {"file": file, "kind": kind, "precision": precision, "sha256": sha256_file(dest),
                 "size": dest.stat().st_size, "made_by": made_by or {}, "parity": parity, "passed": passed, **extra}
        self.artifacts[name] = entry
        return entry

    def to_dict(self) -> dict[str, Any]:
        from ganrt import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "ganrt_version": __version__,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "spec": self.spec.to_dict(),
            "graph": self.graph,
            "source": self.source,
            "artifacts": self.artifacts,
            "benchmarks": self.benchmarks,
            "extra": self.extra,
        }

    def save(self) -> Path:
        """Write manifest.json atomically (last step of any change to the bundle)."""
        manifest = self.path / MANIFEST
        atomic_write_json(manifest, self.to_dict())
        return manifest

    def sha256(self) -> str:
        """Identity of the bundle: sha256 of its manifest file."""
        return sha256_file(self.path / MANIFEST)
