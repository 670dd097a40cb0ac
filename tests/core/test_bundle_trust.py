"""A bundle is data from people and machines the reader does not control: its manifest is checked field by
field (one-line BundleError), its artifact paths stay inside it, and nothing outside it is ever deleted."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from ganrt.bundle import MANIFEST, Bundle, BundleWriter
from ganrt.cli import cli
from ganrt.errors import BundleError

GRAPH = {"file": "model.fp32.onnx", "kind": "onnx", "precision": "fp32", "passed": True, "parity": {"psnr_db": 60}}


@pytest.fixture
def bundle(tmp_path, tiny_spec, write_bundle):
    """A small valid bundle (one graph file) in tmp_path/b, with a file beside it that nothing may touch."""
    (tmp_path / "victim.txt").write_text("not the bundle's")
    write_bundle(tmp_path / "b", tiny_spec, {"onnx-fp32": (b"graph", GRAPH)}, graph={"max_batch": 4})
    return tmp_path / "b"


def edit(bundle_dir, change) -> None:
    """Apply ``change(manifest dict)`` to the bundle's manifest.json, as a hand (or an attacker) would."""
    path = bundle_dir / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_in(*keys, value):
    def change(data):
        d = data
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


MALFORMED = [
    # (what the manifest says, the one-line error it gets)
    (lambda d: d["artifacts"]["onnx-fp32"].pop("file"), r"artifacts\.onnx-fp32: 'file' is a required property"),
    (set_in("spec", "output_range", value=[1]), r"spec: GeneratorSpec\.output_range must be \[low, high\]"),
    (set_in("artifacts", "onnx-fp32", value=["model.fp32.onnx"]), r"artifacts\.onnx-fp32: .* is not of type 'object'"),
    (set_in("graph", "max_batch", value="many"), r"graph\.max_batch: 'many' is not of type 'integer'"),
    (set_in("graph", "max_batch", value=0), r"graph\.max_batch: 0 is less than the minimum of 1"),
    (set_in("artifacts", "onnx-fp32", "sha256", value="00ff"), r"artifacts\.onnx-fp32\.sha256: '00ff' does not match"),
    (set_in("artifacts", "onnx-fp32", "kind", value="pickle"), r"artifacts\.onnx-fp32\.kind: 'pickle' is not one of"),
    (set_in("artifacts", value=[]), r"artifacts: \[\] is not of type 'object'"),
    (set_in("spec", "latent_dim", value="16"), r"spec: GeneratorSpec\.latent_dim must be an integer"),
    (set_in("artifacts", "onnx-fp32", "weights_artifact", value="nope"), r"weights_artifact: names 'nope'"),
]


@pytest.mark.parametrize(("change", "match"), MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_a_malformed_manifest_is_one_line_bundle_error(bundle, change, match):
    edit(bundle, change)
    with pytest.raises(BundleError, match=match) as info:
        Bundle.open(bundle)
    assert "\n" not in str(info.value) and str(bundle / MANIFEST) in str(info.value)


@pytest.mark.parametrize(("change", "match"), MALFORMED[:4], ids=["no-file", "output-range", "list", "max-batch"])
@pytest.mark.parametrize("command", ["inspect", "generate"])
def test_commands_on_a_malformed_manifest_print_one_line_and_exit_2(bundle, tmp_path, change, match, command):
    edit(bundle, change)
    args = [command, str(bundle)] + (["--out", str(tmp_path / "out"), "--seeds", "0"] if command == "generate" else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("ganrt: error: ") and result.output.count("\n") == 1


@pytest.mark.parametrize("file", ["../victim.txt", "/etc/passwd", "a/../../victim.txt", "./model.fp32.onnx",
                                  "a//b.onnx", "manifest.json", "tuning/x.json", ".hidden", "a\\..\\b"])
def test_artifact_paths_must_be_plain_relative_paths_inside_the_bundle(bundle, file):
    edit(bundle, set_in("artifacts", "onnx-fp32", "file", value=file))
    with pytest.raises(BundleError, match=r"artifacts\.onnx-fp32: artifact file"):
        Bundle.open(bundle, verify=False)


def test_a_symlink_out_of_the_bundle_is_refused(bundle, tmp_path):
    os.symlink(tmp_path, bundle / "escape")  # a folder inside that leads outside
    edit(bundle, set_in("artifacts", "onnx-fp32", "file", value="escape/victim.txt"))
    with pytest.raises(BundleError, match="leads outside the bundle"):
        Bundle.open(bundle, verify=False)
    os.symlink(tmp_path / "victim.txt", bundle / "model.link")  # a file that is a link to one outside
    edit(bundle, set_in("artifacts", "onnx-fp32", "file", value="model.link"))
    with pytest.raises(BundleError, match="leads outside the bundle"):
        Bundle.open(bundle, verify=False)


def test_a_symlink_within_the_bundle_is_fine(bundle):
    os.symlink("model.fp32.onnx", bundle / "alias.onnx")
    edit(bundle, set_in("artifacts", "onnx-fp32", "file", value="alias.onnx"))
    assert Bundle.open(bundle).artifact_path("onnx-fp32").read_bytes() == b"graph"


def test_re_export_into_a_bundle_naming_a_file_outside_deletes_nothing(bundle, tmp_path, tiny_spec, write_bundle):
    """On main, re-exporting into this bundle deleted ../victim.txt."""
    edit(bundle, set_in("artifacts", "onnx-fp32", "file", value="../victim.txt"))
    with pytest.raises(BundleError, match=r"artifact file '\.\./victim\.txt' must be a plain relative path"):
        write_bundle(bundle, tiny_spec, {"onnx-fp32": (b"graph2", GRAPH)}, graph={"max_batch": 4})
    assert (tmp_path / "victim.txt").read_text() == "not the bundle's"


def test_a_symlink_planted_after_opening_is_refused_before_a_delete(bundle, tmp_path, tiny_spec, write_bundle):
    """Paths are checked again right before a file is removed: a folder swapped for a link in between fails."""
    write_bundle(bundle, tiny_spec, {"onnx-int8": (b"q", {**GRAPH, "file": "sub/model.int8.onnx",
                                                          "precision": "int8"})}, graph={"max_batch": 4})
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.int8.onnx").write_text("keep me")
    with BundleWriter(bundle, tiny_spec) as writer:
        os.rename(bundle / "sub", tmp_path / "sub.bak")
        os.symlink(tmp_path / "outside", bundle / "sub")
        with pytest.raises(BundleError, match="leads outside the bundle"):
            writer.commit(graph={"max_batch": 8}, source={}, staged=[])  # graph changed: onnx-int8 would go
    assert (tmp_path / "outside" / "model.int8.onnx").read_text() == "keep me"
