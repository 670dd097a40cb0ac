"""The bundle format: a directory a user ships, described by ``manifest.json``.

    bundle/
      manifest.json          this module's format (below)
      generator.safetensors  reference weights (a ganrt checkpoint holding G_ema as G + the spec)
      model.fp32.onnx, model.fp16.onnx, model.int8.onnx, ...
      engines/<precision>.<sm>.trt<version>.plan
      timing.cache
      tuning/<machine-key>.json   benchmark and tuning results per machine (ganrt.runtime.tuning); not
                                  part of the manifest, the only thing that changes after export

manifest.json::

    {"format": "ganrt.bundle", "format_version": 1, "ganrt_version": str, "created": str,
     "spec": {GeneratorSpec},
     "graph": {"inputs": [{"name", "dtype", "shape"}], "outputs": [...], "output_format": "uint8-nhwc",
               "opset": int, "max_batch": int, "dynamic_axes": {...}},
     "source": {...how the reference was obtained...},
     "artifacts": {NAME: {"file": relative path (a file, or a directory: "files" then holds {path: sha256} of
                                  every file in it and "sha256" the hash of that listing),
                          "kind": a kind of the table of artifacts (ganrt.artifacts), "timing_cache" or "other",
                          "precision": "fp32"|"fp16"|"bf16"|"int8"|None, "sha256": hex, "size": bytes,
                          "made_by": {...}, "parity": {...}|None, "passed": bool|None, ...}},
     "variants": {VARIANT: {"artifact": NAME, "passed": bool|None, "failures": [...], "parity": {...},
                           "batch_sizes": [...], "verified_on": {"cpu", "gpu"}, "why_not": str, ...}}
                 what export verified through the runtime's own backend code at every batch bucket
                 (ganrt.export.variants); a failed variant may name an artifact that was not shipped,
     "not_shipped": {NAME: {"kind", "precision", "parity", "failures"}}  what the last export built and left out,
     "benchmarks": {...}  read only: written by ganrt before tuning records, kept as their fallback}

**Trust.** A bundle is data. :meth:`Bundle.open` checks the manifest against :data:`MANIFEST_SCHEMA` (one-line
``BundleError`` for any violation), every artifact path (relative, normalised, inside the bundle, no symlink
out of it) and, by default, every artifact's sha256. Opening never imports or runs code.

**Immutable, crash-safe writes.** After export, ``manifest.json`` and the artifacts never change in place:
:class:`BundleWriter` (the one writer, used by ``ganrt export``) holds a lock beside the bundle (one writer
at a time), moves new files in under names the current manifest does not use, replaces the manifest last
with an atomic rename, and only then removes the files the new manifest no longer lists. A reader sees the
old bundle or the new one; a kill at any moment leaves one of them, plus leftovers that the writer's journal
(in its staging directory) lets the next export remove. The merge/replace policy of a re-export (which old
artifacts stay) is :func:`plan_merge`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import posixpath
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganrt import schema as S
from ganrt.artifacts import KINDS
from ganrt.errors import BundleError, SpecError
from ganrt.fileio import (
    LockBusy,
    NotRegularFile,
    atomic_write_json,
    exclusive_lock,
    fsync_path,
    move_into,
    read_regular,
    remove_temp_files,
    sha256_file,
)
from ganrt.precisions import NAMES
from ganrt.spec import GeneratorSpec

FORMAT = "ganrt.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "generator.safetensors"
WEIGHTS_ARTIFACT = "weights"
TUNING_DIR = "tuning"
ARTIFACT_KINDS = tuple(dict.fromkeys((*KINDS, "timing_cache", "other")))  # the table's kinds, and two of its own
DRAWN_KINDS = tuple(k for k in KINDS if k != "weights")  # artifacts computed from the weights (graphs, IRs, engines)
PRECISIONS = NAMES  # ganrt.precisions
REVISION_PREFIX = "rev-"  # a re-export's files whose usual names the current manifest still uses
OPEN_ATTEMPTS = 5  # a manifest replaced while it was being read is read again, this many times at most
JOURNAL = "journal.json"
MAX_MANIFEST_BYTES = 64 * 2**20  # a manifest is a few KB; a larger file is not one

_TENSOR = {"type": "object", "required": ["name", "dtype"],
           "properties": {"name": S.NAME, "dtype": {"enum": ["float32", "float16", "int64", "int32", "uint8"]},
                          "shape": {"type": "array", "items": {"type": ["integer", "string"]}}}}
_MS = {"type": ["number", "null"], "minimum": 0}
ARTIFACT_SCHEMA = {
    "type": "object",
    "required": ["file", "kind", "sha256"],
    "properties": {
        "file": {"type": "string", "minLength": 1, "maxLength": 1024},
        "kind": {"enum": list(ARTIFACT_KINDS)},
        "precision": {"enum": [*PRECISIONS, None]},
        "sha256": S.SHA256,
        "size": S.COUNT,
        "made_by": S.OBJECT,
        "parity": {"type": ["object", "null"]},
        "passed": {"type": ["boolean", "null"]},
        "rewritten": {"type": "boolean"},
        "runtime": S.NAME,
        "files": {"type": "object", "additionalProperties": S.SHA256},
        "weights_artifact": S.NAME,
        "small_batch_of": S.NAME,
        "small_batch_graph": {"type": "object", "required": ["artifact", "max_batch"],
                              "properties": {"artifact": S.NAME, "max_batch": {"type": "integer", "minimum": 1}}},
        "failures": {"type": "array", "items": {"type": "string"}},
    },
}
VARIANT_SCHEMA = {
    "type": "object",
    "required": ["artifact", "passed"],
    "properties": {
        "artifact": S.NAME,
        "backend": S.NAME,
        "precision": {"enum": [*PRECISIONS, None]},
        "device": {"enum": ["cpu", "cuda"]},
        "passed": {"type": ["boolean", "null"]},
        "failures": {"type": "array", "items": S.TEXT},
        "why_not": S.TEXT,
        "note": S.TEXT,
        "parity": {"type": ["object", "null"]},
        "tolerance": S.OBJECT,
        "batch_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "verified_on": S.OBJECT,
    },
}
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "spec", "artifacts"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"const": FORMAT_VERSION},
        "ganrt_version": S.TEXT,
        "created": {"type": ["string", "null"]},
        "spec": S.OBJECT,  # its fields: GeneratorSpec's own checks
        "graph": {"type": "object", "properties": {
            "inputs": {"type": "array", "items": _TENSOR},
            "outputs": {"type": "array", "items": _TENSOR},
            "output_format": {"enum": ["uint8-nhwc", "float-nchw"]},
            "opset": {"type": "integer", "minimum": 1, "maximum": 100},
            "max_batch": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
            "dynamic_axes": S.OBJECT}},
        "source": S.OBJECT,
        "artifacts": {"type": "object", "propertyNames": S.NAME, "additionalProperties": ARTIFACT_SCHEMA},
        "variants": {"type": "object", "propertyNames": S.NAME, "additionalProperties": VARIANT_SCHEMA},
        "not_shipped": {"type": "object", "propertyNames": S.NAME, "additionalProperties": S.OBJECT},
        "benchmarks": {"type": "object", "properties": {
            "machine": S.OBJECT, "batch_size": {"type": "integer", "minimum": 1},
            "variants": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "median_ms": _MS, "median_ms_by_batch": {"type": "object", "additionalProperties": _MS},
                "passed": {"type": ["boolean", "null"]}}}}}},
        "extra": S.OBJECT,
    },
}


def onnx_artifact_name(precision: str, rewritten: bool = False) -> str:
    """Manifest name of an ONNX graph: 'onnx-fp32', 'onnx-fp16', ...; '-rw' marks a rewritten graph."""
    return f"onnx-{precision}" + ("-rw" if rewritten else "")


def onnx_file_name(precision: str, rewritten: bool = False) -> str:
    return f"model.{precision}" + (".rw" if rewritten else "") + ".onnx"


# -- artifact paths ------------------------------------------------------------------------------------
def check_relative(file: Any, *, where: str) -> str:
    """``file`` as a manifest may hold it: a normalised relative POSIX path, not the manifest, not the tuning
    records, no hidden part (temporary files and locks are hidden). BundleError otherwise."""
    ok = isinstance(file, str) and file and "\\" not in file and "\0" not in file and not file.startswith("/")
    parts = file.split("/") if ok else []
    if not ok or posixpath.normpath(file) != file or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise BundleError(f"{where}: artifact file {file!r} must be a plain relative path inside the bundle "
                          "(no '..', no absolute path, no hidden part)")
    if file == MANIFEST or parts[0] == TUNING_DIR:
        raise BundleError(f"{where}: artifact file {file!r} names the bundle's own {parts[0]}")
    return file


def resolve_inside(root: Path, file: str, *, where: str) -> Path:
    """``root/file`` after checking that neither it nor a folder on the way is a symlink leading out of
    ``root`` (checked again right before anything is deleted or overwritten)."""
    return confine(root, check_relative(file, where=where), where=where)


def confine(root: Path, file: str, *, where: str, what: str = "artifact file") -> Path:
    """``root/file`` (a relative path already checked) unless a symlink on the way leads out of ``root``."""
    path = root / file
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise BundleError(f"{where}: {what} {file!r} leads outside the bundle (a symlink); refusing to use it")
    return path


def home_name(file: str) -> str:
    """An artifact file's usual name: 'rev-1a2b3c4d/model.fp32.onnx' -> 'model.fp32.onnx'."""
    head, _, rest = file.partition("/")
    return rest if head.startswith(REVISION_PREFIX) and rest else file


def fingerprint(path: Path) -> dict[str, Any]:
    """An artifact's manifest fields for what is at ``path``: {"sha256", "size"} of a file; of a directory also
    "files", {relative path: sha256} of every file in it, and "sha256" is the hash of that listing. A directory
    artifact holds plain files and folders only (BundleError for a symlink or anything else in it)."""
    if not path.is_dir() or path.is_symlink():
        return {"sha256": sha256_file(path), "size": path.stat().st_size}
    files, size = {}, 0
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path).as_posix()
        if item.is_symlink() or not (item.is_file() or item.is_dir()):
            raise BundleError(f"artifact directory {path.name}: {rel} is not a plain file or folder; refusing it")
        if item.is_file():
            files[check_relative(rel, where=f"artifact directory {path.name}")] = sha256_file(item)
            size += item.stat().st_size
    listing = json.dumps(files, sort_keys=True).encode()
    return {"sha256": hashlib.sha256(listing).hexdigest(), "size": size, "files": files}


def sha256_path(path: Path) -> str:
    """The sha256 a manifest records for the file or directory at ``path`` (see :func:`fingerprint`)."""
    return fingerprint(path)["sha256"]


# -- reading -------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    path: Path
    spec: GeneratorSpec
    graph: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    benchmarks: dict[str, Any] = field(default_factory=dict)  # legacy section, read only
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # what export verified, per variant
    not_shipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the last export left out
    extra: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    ganrt_version: str | None = None
    manifest_sha256: str | None = None  # of the manifest as read: the bundle's identity

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = True) -> "Bundle":
        """The bundle at ``path``, its manifest checked; ``verify``: every artifact's sha256 too.

        A manifest replaced (by a re-export) while its artifacts were being checked is read again.
        """
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"bundle {path} does not exist or is not a directory; make one with `ganrt export`")
        for attempt in range(OPEN_ATTEMPTS):
            raw = _read_manifest(path)
            bundle = cls.from_manifest(path, raw)
            if not verify:
                return bundle
            try:
                bundle.verify()
                return bundle
            except BundleError:
                if attempt + 1 == OPEN_ATTEMPTS or not bundle.replaced():
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def from_manifest(cls, path: Path, raw: bytes) -> "Bundle":
        """Parse and check manifest bytes (schema, spec, artifact paths); no artifact is read."""
        where = str(path / MANIFEST)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{where} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{where} is not a ganrt bundle manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{where}: bundle format version {data.get('format_version')} is not supported "
                              f"(this ganrt reads {FORMAT_VERSION}); re-export the bundle or upgrade ganrt")
        S.check(data, MANIFEST_SCHEMA, where=where, error=BundleError)
        try:
            spec = GeneratorSpec.from_dict(data["spec"])
        except SpecError as e:
            raise BundleError(f"{where}: spec: {e}") from None
        artifacts = data["artifacts"]
        for name, entry in artifacts.items():
            resolve_inside(path, entry["file"], where=f"{where}: artifacts.{name}")
            for key, ref in (("weights_artifact", entry.get("weights_artifact")),
                             ("small_batch_graph", (entry.get("small_batch_graph") or {}).get("artifact")),
                             ("small_batch_of", entry.get("small_batch_of"))):
                if ref is not None and ref not in artifacts:
                    raise BundleError(f"{where}: artifacts.{name}.{key}: names {ref!r}, which the bundle does "
                                      "not list")
            for file in entry.get("files") or {}:
                check_relative(file, where=f"{where}: artifacts.{name}.files")
        variants = data.get("variants") or {}
        for name, record in variants.items():
            if record["passed"] is not False and record["artifact"] not in artifacts:
                raise BundleError(f"{where}: variants.{name}.artifact: names {record['artifact']!r}, which the "
                                  "bundle does not list")
        return cls(path=path, spec=spec, graph=data.get("graph") or {}, artifacts=artifacts,
                   source=data.get("source") or {}, benchmarks=data.get("benchmarks") or {}, variants=variants,
                   not_shipped=data.get("not_shipped") or {},
                   extra=data.get("extra") or {}, created=data.get("created"),
                   ganrt_version=data.get("ganrt_version"), manifest_sha256=hashlib.sha256(raw).hexdigest())

    def verify(self, names: list[str] | None = None) -> None:
        """Check that every listed artifact (or those in ``names``) exists with its recorded sha256 (a directory
        artifact: exactly its recorded files, each with its own)."""
        for name in names or list(self.artifacts):
            entry = self.artifact(name)
            file = self.artifact_path(name)
            is_dir = "files" in entry
            try:
                if is_dir != (file.is_dir() and not file.is_symlink()):
                    raise FileNotFoundError(file)
                found = fingerprint(file)
            except (FileNotFoundError, IsADirectoryError):  # also: removed by a re-export after the check above
                raise BundleError(f"bundle {self.path}: artifact {name!r} ({entry['file']}) is missing") from None
            except NotRegularFile as e:
                raise BundleError(f"bundle {self.path}: artifact {name!r} ({entry['file']}) is {e.kind}, not a "
                                  "file; re-export the bundle") from None
            if is_dir and found["files"] != entry["files"]:
                extra = sorted(set(found["files"]) - set(entry["files"]))
                changed = sorted(f for f in entry["files"] if found["files"].get(f) != entry["files"][f])
                what = f"{changed[0]} is missing or changed" if changed else f"{extra[0]} is not one of its files"
                raise BundleError(f"bundle {self.path}: {entry['file']}/{what} (tampered or corrupted); "
                                  "re-export the bundle")
            if found["sha256"] != entry["sha256"]:
                raise BundleError(f"bundle {self.path}: {entry['file']} does not match its recorded sha256 "
                                  f"(tampered or corrupted); re-export the bundle")

    def replaced(self) -> bool:
        """Whether manifest.json changed (a re-export) since this bundle was read."""
        try:
            return hashlib.sha256(_read_manifest(self.path)).hexdigest() != self.manifest_sha256
        except BundleError:
            return True

    def artifact(self, name: str) -> dict[str, Any]:
        if name not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise BundleError(f"bundle {self.path} has no artifact {name!r} (it has: {have})")
        return self.artifacts[name]

    def artifact_path(self, name: str) -> Path:
        return resolve_inside(self.path, self.artifact(name)["file"], where=f"bundle {self.path}")

    def find(self, *, kind: str | None = None, precision: str | None = None) -> dict[str, dict[str, Any]]:
        """Artifacts matching kind and/or precision, by name."""
        return {n: a for n, a in self.artifacts.items()
                if (kind is None or a.get("kind") == kind) and (precision is None or a.get("precision") == precision)}

    def files(self) -> set[str]:
        """Every file the manifest lists (relative paths)."""
        return {a["file"] for a in self.artifacts.values()}

    def to_dict(self) -> dict[str, Any]:
        from ganrt import __version__

        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "ganrt_version": self.ganrt_version or __version__,
             "created": self.created or _now(), "spec": self.spec.to_dict(), "graph": self.graph,
             "source": self.source, "artifacts": self.artifacts, "extra": self.extra}
        if self.variants:
            d["variants"] = self.variants
        if self.not_shipped:
            d["not_shipped"] = self.not_shipped
        if self.benchmarks:
            d["benchmarks"] = self.benchmarks
        return d

    def sha256(self) -> str:
        """Identity of the bundle: sha256 of its manifest as it was read (it never changes after export)."""
        return self.manifest_sha256 or hashlib.sha256(_read_manifest(self.path)).hexdigest()


def _read_manifest(path: Path) -> bytes:
    try:
        return read_regular(path / MANIFEST, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError(f"{path} has no {MANIFEST}: not a ganrt bundle, or its export did not finish") from None
    except NotRegularFile as e:
        raise BundleError(f"{path / MANIFEST} is {e.kind}, not a bundle manifest; refusing to read it") from None
    except OSError as e:
        raise BundleError(f"{path / MANIFEST} cannot be read ({e.strerror or e})") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- the merge/replace policy of a re-export -----------------------------------------------------------
@dataclass
class Staged:
    """A finished artifact file in the staging directory and its manifest entry (``file`` = its usual name)."""

    name: str
    path: Path
    entry: dict[str, Any]


def plan_merge(current: Bundle | None, graph: dict[str, Any], staged: list[Staged], *,
               digest: Callable[[Path], str] = sha256_path,
               same: Callable[[Path, Path], bool] | None = None) -> dict[str, str]:
    """Which of ``current``'s artifacts that this export does not rebuild must go, and why ({name: reason}).

    Graphs and engines go when the graph's I/O or the weights changed (they would draw another generator's
    images), and so do weights cast from the old weights (torch fp16/bf16) when the weights changed; so does
    an artifact sharing a file this export rebuilt with other contents (onnx-bf16 shares onnx-fp32-rw's), a
    small-batch graph whose main graph was rebuilt without it, and the weights file of any IR that goes.
    Everything else is kept. ``digest`` / ``same``: sha256_path / same_tensors (a commit passes its memo).
    """
    if current is None:
        return {}
    same = same or same_tensors
    rebuilt = {s.name for s in staged}
    kept = {n: a for n, a in current.artifacts.items() if n not in rebuilt}
    drop: dict[str, str] = {}
    new_weights = next((s.path for s in staged if s.name == WEIGHTS_ARTIFACT), None)
    old_weights = current.artifact_path(WEIGHTS_ARTIFACT) if WEIGHTS_ARTIFACT in current.artifacts else None
    io_changed = bool(current.graph and current.graph != graph)
    weights_changed = bool(new_weights and old_weights and not same(new_weights, old_weights))
    for n, a in kept.items():
        made_by = a.get("made_by") or {}
        drawn_from_weights = a.get("kind") in DRAWN_KINDS or "weights_of" in made_by
        if io_changed and drawn_from_weights:
            drop[n] = "the graph's I/O changed"
        elif weights_changed and (drawn_from_weights or "cast_from" in made_by):
            drop[n] = "the weights changed"
    rebuilt_files = {s.entry["file"]: s.path for s in staged}
    for n, a in kept.items():
        shared = rebuilt_files.get(home_name(a["file"]))
        if shared is not None and digest(shared) != a["sha256"]:
            drop.setdefault(n, f"its file {home_name(a['file'])} was rebuilt, with other contents, without it")
        elif a.get("small_batch_of") in rebuilt:
            drop.setdefault(n, f"{a['small_batch_of']} was rebuilt without it")
    for n, a in kept.items():
        if (a.get("made_by") or {}).get("weights_of") in drop:
            drop.setdefault(n, f"weights of {a['made_by']['weights_of']}")
    return drop


def same_tensors(a: Path, b: Path) -> bool:
    """Whether two safetensors files hold the same tensors (their metadata, e.g. export time, may differ)."""
    import numpy as np
    from safetensors.numpy import load_file

    try:
        x, y = load_file(str(a)), load_file(str(b))
    except Exception:  # an unreadable old file: treat as changed
        return False
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]) for k in x)


# -- writing -------------------------------------------------------------------------------------------
class BundleWriter:
    """The one way a bundle directory changes: ``with BundleWriter(path, spec) as w: ...; w.commit(...)``.

    Entering takes the writer lock (``.<name>.lock`` beside the bundle; a second writer gets a BundleError
    naming the holder, or waits ``wait`` seconds), removes what killed writers left (their staging
    directories, and the files their journals list that no manifest uses), checks that ``path`` is this
    generator's bundle or can become one, and makes :attr:`stage`, a staging directory beside the bundle.
    Leaving removes the stage and releases the lock. Nothing in the bundle changes before :meth:`commit`.
    """

    def __init__(self, path: str | os.PathLike, spec: GeneratorSpec, *, wait: float = 0.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.path = Path(os.path.abspath(path))
        self.spec = spec
        self.wait = wait
        self.log = log or (lambda s: None)
        self.stage: Path | None = None
        self._lock = None

    @property
    def lock_path(self) -> Path:
        return self.path.parent / f".{self.path.name}.lock"

    def __enter__(self) -> "BundleWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(self.lock_path, timeout=self.wait)
        try:
            self._lock.__enter__()
        except LockBusy as e:
            self._lock = None
            raise BundleError(f"another export is writing {self.path} ({e.holder} holds {self.lock_path.name}); "
                              "wait for it to finish, or export into another directory") from None
        try:
            self._clean_leftovers()
            self._check_destination()
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.export-", dir=self.path.parent))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def current(self) -> Bundle | None:
        """The bundle as it is now (manifest checked, artifacts not hashed), or None before the first export."""
        return Bundle.open(self.path, verify=False) if (self.path / MANIFEST).exists() else None

    def _check_destination(self) -> None:
        if (self.path / MANIFEST).exists():
            old = self.current()
            if old.spec != self.spec:
                raise BundleError(f"{self.path} already holds a bundle of another generator ({old.spec.arch}, "
                                  f"latent {old.spec.latent_dim}); export into a new directory")
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise BundleError(f"{self.path} exists, is not empty and is not a ganrt bundle; choose another --out")

    def _clean_leftovers(self) -> None:
        """Staging directories of killed exports, and the bundle files their journals list that the current
        manifest does not use (this writer holds the lock: no other export is running)."""
        for stage in sorted(self.path.parent.glob(f".{self.path.name}.export-*")):
            if not re.fullmatch(r"[A-Za-z0-9_]+", stage.name[len(self.path.name) + 9:]):
                continue  # another bundle's ("NAME.export-x" has stages ".NAME.export-x.export-...")
            journal = _read_journal(stage / JOURNAL)
            if journal is not None and journal.get("bundle") == str(self.path):
                current = self.current()
                used = current.files() if current is not None else set()
                for file in journal.get("writes", []) + journal.get("removes", []):
                    if file not in used:
                        self._remove(file)
                self._remove_empty_dirs(journal.get("dirs", []))
                if journal.get("made_root") and self.path.is_dir() and current is None:
                    _rmdir_if_empty(self.path)
            shutil.rmtree(stage, ignore_errors=True)
            self.log(f"  removed the leftovers of an interrupted export ({stage.name})")
        remove_temp_files(self.path, MANIFEST)

    def _remove_empty_dirs(self, dirs: list[str]) -> None:
        """Remove the bundle's folders among ``dirs`` that are empty, deepest first (never the bundle itself)."""
        for d in sorted(set(dirs), key=lambda d: d.count("/"), reverse=True):
            try:
                _rmdir_if_empty(resolve_inside(self.path, d, where=f"bundle {self.path}"))
            except BundleError:
                pass

    def _remove(self, file: str) -> None:
        """Delete one bundle file (and the temporary copies of it a killed move left), never outside."""
        try:
            path = resolve_inside(self.path, file, where=f"bundle {self.path}")
        except BundleError as e:
            self.log(f"  not removing {file!r}: {e}")
            return
        if path.is_dir() and not path.is_symlink():  # a directory artifact (confined above)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        remove_temp_files(path.parent, path.name)

    def commit(self, *, graph: dict[str, Any], source: dict[str, Any], staged: list[Staged],
               variants: dict[str, dict[str, Any]] | None = None,
               not_shipped: dict[str, dict[str, Any]] | None = None) -> Bundle:
        """Merge ``staged`` into the bundle (policy: :func:`plan_merge`), crash-safely; returns it re-read.

        New files go to names the current manifest does not use (their usual names, else the same names under
        a fresh ``rev-<token>/``); a file already in the bundle with the same bytes (the weights: the same
        tensors) is kept. The manifest is replaced last, atomically; then the files it no longer lists go.
        ``variants``: this export's variant records; the old records of artifacts kept as they were stay.
        ``not_shipped``: what this export built and left out.
        """
        if self.stage is None:
            raise RuntimeError("BundleWriter.commit outside its with-block")
        current = self.current()
        prints, same = functools.cache(fingerprint), functools.cache(same_tensors)  # each file read once
        digest = lambda path: prints(path)["sha256"]
        drop = plan_merge(current, graph, staged, digest=digest, same=same)
        for n, why in sorted(drop.items()):
            self.log(f"  dropping {n} ({why}; export it again to keep it)")
        old_files = current.files() if current is not None else set()
        placed = self._place(current, staged, old_files, prints=prints, same=same)
        artifacts = {n: a for n, a in (current.artifacts if current else {}).items() if n not in drop}
        for s in staged:
            dest, prints = placed[s.path]
            artifacts[s.name] = {**s.entry, "file": dest, **prints}
        rebuilt = {s.name for s in staged}
        records = {v: r for v, r in (current.variants if current else {}).items()
                   if r["artifact"] in artifacts and r["artifact"] not in rebuilt}
        bundle = Bundle(path=self.path, spec=self.spec, graph=graph, artifacts=artifacts,
                        source=source or (current.source if current else {}),
                        variants={**records, **(variants or {})}, not_shipped=dict(not_shipped or {}),
                        extra=current.extra if current else {}, created=current.created if current else None)
        new_files = bundle.files()
        moves = {src: dest for src, (dest, _) in placed.items() if dest not in old_files}
        dirs = _folders(moves.values())
        _write_journal(self.stage / JOURNAL, {"bundle": str(self.path), "writes": sorted(moves.values()),
                                              "removes": sorted(old_files - new_files), "dirs": dirs,
                                              "made_root": not self.path.exists()})
        self.path.mkdir(parents=True, exist_ok=True)
        for src, dest in moves.items():
            target = resolve_inside(self.path, dest, where=f"bundle {self.path}")
            target.parent.mkdir(parents=True, exist_ok=True)
            move_into(src, target)
        fsync_path(self.path)
        atomic_write_json(self.path / MANIFEST, bundle.to_dict())  # the switch: old bundle -> new bundle
        fsync_path(self.path)
        for file in sorted(old_files - new_files):
            self._remove(file)
        self._remove_empty_dirs(_folders(old_files - new_files))
        return Bundle.open(self.path)

    def _place(self, current: Bundle | None, staged: list[Staged], old_files: set[str], *,
               prints: Callable[[Path], dict], same: Callable[[Path, Path], bool]) -> dict[Path, tuple[str, dict]]:
        """{staged file: (its file in the bundle, its fingerprint: sha256, size[, files])}. A staged file whose
        bytes the bundle already has at its usual name keeps that file (weights: the same tensors); an OpenVINO
        IR and its weights file are kept or moved together (the IR finds its .bin beside it). Moved files take
        their usual names unless the current manifest uses one of them, then all go under one fresh
        rev-<token>/."""
        by_home = {home_name(a["file"]): n for n, a in (current.artifacts.items() if current else ())}
        keep: dict[Path, dict[str, Any]] = {}
        for s in staged:
            old_name = by_home.get(s.entry["file"])
            if old_name is None or s.path in keep:
                continue
            old = current.artifacts[old_name]
            if s.entry.get("kind") == "weights" and old.get("kind") == "weights":  # its metadata holds a time
                if same(s.path, current.artifact_path(old_name)):
                    keep[s.path] = old
            elif prints(s.path)["sha256"] == old["sha256"]:
                keep[s.path] = old
        paths = {s.name: s.path for s in staged}
        for s in staged:  # an IR and its .bin: both kept, or both moved
            bin_path = paths.get(s.entry.get("weights_artifact"))
            if bin_path is not None and (s.path in keep) != (bin_path in keep):
                keep.pop(s.path, None)
                keep.pop(bin_path, None)
        moving = {s.path: s.entry["file"] for s in staged if s.path not in keep}
        prefix = ""
        if any(file in old_files for file in moving.values()):
            prefix = f"{REVISION_PREFIX}{secrets.token_hex(4)}/"
        placed = {}
        for s in staged:
            if s.path in keep:
                old = keep[s.path]
                placed[s.path] = (old["file"], {k: old[k] for k in ("sha256", "size", "files") if k in old}
                                  if "size" in old else prints(s.path))
            else:
                placed[s.path] = (prefix + s.entry["file"], prints(s.path))
        return placed


def _write_journal(path: Path, journal: dict[str, Any]) -> None:
    atomic_write_json(path, {"format": "ganrt.bundle-journal", **journal})


def _read_journal(path: Path) -> dict[str, Any] | None:
    """A staging directory's journal, or None when there is none or it is not one (then nothing is removed)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != "ganrt.bundle-journal":
        return None
    lists = [data.get(k, []) for k in ("writes", "removes", "dirs")]
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists):
        return None
    return data


def _folders(files) -> list[str]:
    """Every folder on the way to ``files``: 'rev-1a/openvino/x.xml' -> 'rev-1a', 'rev-1a/openvino'."""
    out = set()
    for f in files:
        parts = f.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
