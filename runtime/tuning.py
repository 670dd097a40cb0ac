"""Tuning records: what a bundle's variants measured on one machine, kept beside the immutable bundle.

    bundle/tuning/<machine-key>.json

A bundle's manifest and artifacts never change after export; timings do (another machine, another thread
count, a newer onnxruntime). So ``ganrt bench`` writes them here, one record per machine key, and
``backend="auto"`` reads the record of the key it will run with::

    key = machine_key(threads=4)                  # 'intel-xeon-platinum-8488c-nogpu-t4-3f9a1c2e'
    record_tuning(bundle_dir, key, rows)          # merged per (variant, batch size), written atomically
    read_tuning(bundle_dir, key)                  # {} when there is none (or it is unreadable: a warning)
    tuning_table(record, artifacts)               # {variant: {batch: median ms}} of still-current artifacts

**The machine key** covers what changes a timing: the CPU model, the GPU model, the thread count, and the
versions of ganrt and of the inference libraries installed (torch, onnxruntime, openvino, tensorrt). It reads
as ``<cpu>-<gpu|nogpu>-t<threads>-<hash>``, the hash over all of it (:func:`machine_identity`), so a new
library version starts a new record instead of mixing timings.

**A row** (the input of :func:`record_tuning`): ``{"variant": "onnxruntime-fp32", "batch_size": 8,
"median_ms": 1.9, "backend", "precision", "artifact": manifest artifact name, "artifact_sha256": its sha256}``
(optional: "p90_ms", "n_runs"). A row replaces the record's entry for its (variant, batch size) and keeps the
others, so a ``--variants`` run or a second batch sweep adds to the record. Rows whose artifact has since been
rebuilt (another sha256) are ignored by :func:`tuning_table`.

**The record file**::

    {"format": "ganrt.tuning", "format_version": 1, "key": str, "machine": {machine_identity}, "updated": str,
     "variants": {NAME: {"backend", "precision", "artifact", "artifact_sha256",
                         "by_batch": {"8": {"median_ms": float, "p90_ms": float|null, "n_runs": int|null,
                                            "measured": str}}}}}

Writes hold ``tuning/.lock`` (concurrent benches merge, never overwrite each other) and replace the file
atomically. A read-only bundle raises OSError from :func:`record_tuning`; ``ganrt bench`` turns it into a
warning. Timings never change what passed parity: ``auto`` ranks only the variants whose export parity
passed, by these timings.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from ganrt import schema as S
from ganrt.bundle import TUNING_DIR, confine
from ganrt.errors import BundleError, ConfigError
from ganrt.fileio import atomic_write_json, exclusive_lock, read_regular

FORMAT = "ganrt.tuning"
FORMAT_VERSION = 1
# the distributions whose versions change a timing (absent ones are left out of the key)
LIBRARIES = ("ganrt", "torch", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "tensorrt-cu12",
             "tensorrt-cu13")
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{0,150}$")
LOCK_WAIT_S = 60.0
MAX_RECORD_BYTES = 16 * 2**20  # a record is a few KB; a larger file is not one

_BATCH_ROW = {"type": "object", "required": ["median_ms"], "properties": {
    "median_ms": {"type": "number", "exclusiveMinimum": 0},
    "p90_ms": {"type": ["number", "null"], "minimum": 0},
    "n_runs": {"type": ["integer", "null"], "minimum": 0},
    "measured": {"type": ["string", "null"]}}}
RECORD_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "variants"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"const": FORMAT_VERSION},
        "key": S.TEXT,
        "machine": S.OBJECT,
        "updated": S.TEXT,
        "variants": {"type": "object", "propertyNames": S.NAME, "additionalProperties": {
            "type": "object", "required": ["by_batch"], "properties": {
                "backend": S.TEXT, "precision": {"type": ["string", "null"]}, "artifact": {"type": ["string", "null"]},
                "artifact_sha256": {"anyOf": [S.SHA256, {"type": "null"}]},
                "by_batch": {"type": "object", "propertyNames": {"pattern": "^[1-9][0-9]{0,6}$"},
                             "additionalProperties": _BATCH_ROW}}}}},
}
ROW_SCHEMA = {"type": "array", "items": {
    "type": "object", "required": ["variant", "batch_size", "median_ms"],
    "properties": {"variant": S.NAME, "batch_size": {"type": "integer", "minimum": 1, "maximum": 9_999_999},
                   "median_ms": {"type": "number", "exclusiveMinimum": 0},
                   "p90_ms": {"type": ["number", "null"], "minimum": 0},
                   "n_runs": {"type": ["integer", "null"], "minimum": 0},
                   "backend": S.TEXT, "precision": {"type": ["string", "null"]},
                   "artifact": {"type": ["string", "null"]},
                   "artifact_sha256": {"anyOf": [S.SHA256, {"type": "null"}]}}}}


@functools.cache
def _library_versions() -> dict[str, str]:
    versions = {}
    for dist in LIBRARIES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_identity(threads: int | None = None) -> dict[str, Any]:
    """What the machine key covers: {"cpu", "gpu", "threads", "versions"}; threads default to the physical
    cores (what ``runtime.load`` runs with when not told)."""
    from ganrt.runtime.machine import describe_machine, physical_cores

    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    machine = describe_machine()
    return {"cpu": machine["cpu"], "gpu": machine["gpu"], "threads": int(threads or physical_cores()),
            "versions": dict(_library_versions())}


def key_of(identity: dict[str, Any]) -> str:
    """The file-name key of a machine identity: '<cpu>-<gpu|nogpu>-t<threads>-<8 hex of its sha256>'."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{_slug(identity['cpu'])}-{_slug(identity['gpu'] or 'nogpu')}-t{identity['threads']}-{digest}"


def machine_key(threads: int | None = None) -> str:
    """This machine's tuning key at ``threads`` CPU threads (default: the physical cores)."""
    return key_of(machine_identity(threads))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40].strip("-") or "unknown"


def tuning_path(bundle_dir: str | os.PathLike, key: str) -> Path:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ConfigError(f"a tuning key is lower-case letters, digits, '.' and '-' (from machine_key()), got {key!r}")
    root = Path(bundle_dir)  # a tuning/ that is a symlink out of the bundle is refused like an artifact's file
    return confine(root, f"{TUNING_DIR}/{key}.json", where=f"bundle {root}", what="tuning record")


def _load(path: Path) -> dict[str, Any]:
    """The record at ``path`` checked against RECORD_SCHEMA; {} when absent; BundleError when malformed."""
    try:
        data = json.loads(read_regular(path, MAX_RECORD_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable tuning record ({e})") from None
    S.check(data, RECORD_SCHEMA, where=str(path), error=BundleError)
    return data


def read_tuning(bundle_dir: str | os.PathLike, key: str) -> dict[str, Any]:
    """The record of ``key`` in the bundle, or {} when there is none. A malformed record is ignored with a
    warning (it is a cache of measurements: ``ganrt bench`` writes a good one over it)."""
    try:
        return _load(tuning_path(bundle_dir, key))
    except BundleError as e:
        warnings.warn(f"ganrt: ignoring the tuning record {e}; run `ganrt bench` to measure again",
                      RuntimeWarning, stacklevel=2)
        return {}


def record_tuning(bundle_dir: str | os.PathLike, key: str, rows: list[dict[str, Any]], *,
                  identity: dict[str, Any] | None = None) -> Path:
    """Merge ``rows`` into the record of ``key`` (per variant and batch size), atomically, under the record
    lock; returns its path. OSError when the bundle cannot be written (read-only)."""
    S.check(rows, ROW_SCHEMA, where="tuning rows", error=ConfigError)
    path = tuning_path(bundle_dir, key)
    path.parent.mkdir(exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with exclusive_lock(path.parent / ".lock", timeout=LOCK_WAIT_S):
        try:
            record = _load(path)
        except BundleError as e:
            warnings.warn(f"ganrt: replacing the tuning record {e}", RuntimeWarning, stacklevel=2)
            record = {}
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": key,
                  "machine": identity or record.get("machine") or {}, "updated": now,
                  "variants": record.get("variants") or {}}
        for row in rows:
            v = record["variants"].setdefault(row["variant"], {"by_batch": {}})
            if v.get("artifact_sha256") != row.get("artifact_sha256"):
                v["by_batch"] = {}  # timings of another build of the artifact: start afresh
            v.update({k: row.get(k) for k in ("backend", "precision", "artifact", "artifact_sha256")})
            v["by_batch"][str(row["batch_size"])] = {"median_ms": float(row["median_ms"]), "p90_ms": row.get("p90_ms"),
                                                     "n_runs": row.get("n_runs"), "measured": now}
        atomic_write_json(path, record)
    return path


def tuning_table(record: dict[str, Any], artifacts: dict[str, dict[str, Any]]) -> dict[str, dict[int, float]]:
    """{variant: {batch: median ms}} from a record, leaving out variants whose artifact is gone from the bundle
    or was rebuilt since (its sha256 differs): their timings describe another file."""
    table: dict[str, dict[int, float]] = {}
    for name, v in (record.get("variants") or {}).items():
        art = v.get("artifact")
        if art is not None and (art not in artifacts or artifacts[art].get("sha256") != v.get("artifact_sha256")):
            continue
        ms = {int(b): float(row["median_ms"]) for b, row in v.get("by_batch", {}).items()}
        if ms:
            table[name] = ms
    return table


# -- what a server makes of a record -------------------------------------------------------------------------
THROUGHPUT_PLATEAU = 0.9  # a batch whose images/s reach 90% of the best measured is where growth stops


def measured_latencies(bundle, variant: str, threads: int | None) -> dict[int, float] | None:
    """{batch: median ms} of ``variant`` on this machine and thread count: its tuning record (an older
    bundle's manifest benchmarks as the fallback), or None when it was not measured here."""
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import measured_timings

    table, _, _ = measured_timings(bundle.to_dict(), Availability.probe(),
                                   read_tuning(bundle.path, machine_key(threads)))
    return table.get(variant)


def tuned_batching(median_ms_by_batch: dict[int, float]) -> tuple[int, float] | None:
    """(max_batch, max_delay_ms) a dynamic batcher should use, from a variant's median latency per batch size
    (None without figures): the smallest batch whose throughput reaches ``THROUGHPUT_PLATEAU`` of the best, and
    half its time as the longest a request waits for company. ``ganrt serve``, its Ray replicas and the Triton
    Python-backend model all batch by this."""
    rates = {b: b / ms for b, ms in median_ms_by_batch.items() if b >= 1 and ms > 0}
    if not rates:
        return None
    best = max(rates.values())
    batch = min(b for b, r in rates.items() if r >= THROUGHPUT_PLATEAU * best)
    return batch, round(max(0.5, min(50.0, median_ms_by_batch[batch] / 2)), 3)
