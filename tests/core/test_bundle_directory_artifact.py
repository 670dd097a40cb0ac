"""An artifact may be a directory (a backend's own format, e.g. an .mlpackage): every file in it is hashed, the
listing is exact, nothing in it may be a link, and a re-export moves or removes it like a file."""

from __future__ import annotations

import os

import pytest

from ganrt.bundle import Bundle, BundleWriter, Staged
from ganrt.errors import BundleError

ENTRY = {"file": "ir/model.pkg", "kind": "openvino-ir", "precision": "fp32", "made_by": {}, "passed": True}


def _package(stage, name="model.pkg", weights=b"w" * 100):
    root = stage / name
    (root / "Data" / "weights").mkdir(parents=True)
    (root / "Manifest.json").write_text('{"version": 1}')
    (root / "Data" / "weights" / "weight.bin").write_bytes(weights)
    return root


def _commit(path, spec, graph, weights=b"w" * 100):
    with BundleWriter(path, spec) as w:
        return w.commit(graph=graph, source={}, staged=[Staged("pkg", _package(w.stage, weights=weights), ENTRY)])


def test_a_directory_artifact_records_every_file_and_opens_verified(tmp_path, tiny_spec):
    b = _commit(tmp_path / "b", tiny_spec, {"inputs": []})
    entry = b.artifacts["pkg"]
    assert set(entry["files"]) == {"Manifest.json", "Data/weights/weight.bin"} and entry["size"] == 114
    assert Bundle.open(tmp_path / "b").artifact_path("pkg").is_dir()


@pytest.mark.parametrize("tamper, message", [
    (lambda root: (root / "Data" / "weights" / "weight.bin").write_bytes(b"x" * 100),
     r"ir/model.pkg/Data/weights/weight.bin is missing or changed"),
    (lambda root: (root / "Data" / "weights" / "weight.bin").unlink(), r"weight.bin is missing or changed"),
    (lambda root: (root / "extra.bin").write_bytes(b"planted"), r"ir/model.pkg/extra.bin is not one of its files"),
    (lambda root: os.symlink("/etc/hostname", root / "Data" / "link"), r"Data/link is not a plain file or folder"),
], ids=["changed", "removed", "added", "symlink"])
def test_a_changed_directory_artifact_is_refused_naming_the_file(tmp_path, tiny_spec, tamper, message):
    _commit(tmp_path / "b", tiny_spec, {"inputs": []})
    tamper(tmp_path / "b" / "ir" / "model.pkg")
    with pytest.raises(BundleError, match=message):
        Bundle.open(tmp_path / "b")


def test_a_re_export_replaces_and_then_removes_a_directory_artifact(tmp_path, tiny_spec):
    out = tmp_path / "b"
    _commit(out, tiny_spec, {"inputs": []})
    b = _commit(out, tiny_spec, {"inputs": []}, weights=b"v" * 100)  # other bytes: moved in under a new name
    assert b.artifacts["pkg"]["file"].startswith("rev-") and not (out / "ir" / "model.pkg").exists()
    Bundle.open(out)
    with BundleWriter(out, tiny_spec) as w:  # the graph changed: what was drawn from the old weights goes
        b = w.commit(graph={"inputs": [{"name": "z", "dtype": "float32"}]}, source={}, staged=[])
    assert "pkg" not in b.artifacts and not any(out.glob("rev-*"))
