"""The bundle format: round trip, tamper and version checks, and re-export through BundleWriter."""

import json

import pytest

from ganrt.bundle import MANIFEST, Bundle, BundleWriter, onnx_artifact_name, onnx_file_name
from ganrt.errors import BundleError

ONNX = {"file": onnx_file_name("fp32"), "kind": "onnx", "precision": "fp32", "passed": True,
        "parity": {"psnr_db": 60.0}}


@pytest.fixture
def one_graph(write_bundle):
    def make(path, spec, payload=b"graph-bytes"):
        return write_bundle(path, spec, {onnx_artifact_name("fp32"): (payload, ONNX)}, graph={"inputs": []})
    return make


def test_bundle_round_trip(tmp_path, tiny_spec, one_graph):
    one_graph(tmp_path / "b", tiny_spec)
    b = Bundle.open(tmp_path / "b")
    assert b.spec == tiny_spec
    assert b.artifact("onnx-fp32")["file"] == "model.fp32.onnx"
    assert b.artifact_path("onnx-fp32").read_bytes() == b"graph-bytes"
    assert list(b.find(kind="onnx", precision="fp32")) == ["onnx-fp32"]
    assert b.find(precision="int8") == {}


def test_tampered_artifact_is_detected(tmp_path, tiny_spec, one_graph):
    one_graph(tmp_path / "b", tiny_spec)
    (tmp_path / "b" / "model.fp32.onnx").write_bytes(b"evil-bytes!")
    with pytest.raises(BundleError, match="sha256"):
        Bundle.open(tmp_path / "b")


def test_missing_artifact_and_missing_manifest_are_clear(tmp_path, tiny_spec, one_graph):
    one_graph(tmp_path / "b", tiny_spec)
    (tmp_path / "b" / "model.fp32.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.open(tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(tmp_path / "c")
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.open(tmp_path / "nowhere")


def test_unknown_artifact_lists_what_the_bundle_has(tmp_path, tiny_spec, one_graph):
    b = one_graph(tmp_path / "b", tiny_spec)
    with pytest.raises(BundleError, match="has: onnx-fp32"):
        b.artifact("onnx-int8")


def test_future_manifest_version_is_refused(tmp_path, tiny_spec, one_graph):
    one_graph(tmp_path / "b", tiny_spec)
    m = tmp_path / "b" / MANIFEST
    data = json.loads(m.read_text())
    data["format_version"] = 7
    m.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="version 7"):
        Bundle.open(tmp_path / "b")


def test_writer_refuses_a_non_bundle_directory_and_another_generator(tmp_path, tiny_spec, one_graph):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        BundleWriter(tmp_path / "x", tiny_spec).__enter__()
    one_graph(tmp_path / "b", tiny_spec)
    with pytest.raises(BundleError, match="another generator"):
        BundleWriter(tmp_path / "b", tiny_spec.replace(latent_dim=99)).__enter__()
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_reexport_keeps_other_artifacts(tmp_path, tiny_spec, one_graph, write_bundle):
    one_graph(tmp_path / "b", tiny_spec)
    write_bundle(tmp_path / "b", tiny_spec, {"onnx-int8": (b"q", {"file": "model.int8.onnx", "kind": "onnx",
                                                                   "precision": "int8"})}, graph={"inputs": []})
    assert sorted(Bundle.open(tmp_path / "b").artifacts) == ["onnx-fp32", "onnx-int8"]


def test_reexport_never_overwrites_a_file_the_current_manifest_lists(tmp_path, tiny_spec, one_graph):
    """New bytes for a listed name go under rev-<token>/; the old file goes only after the manifest switch."""
    first = one_graph(tmp_path / "b", tiny_spec, b"old-graph")
    second = one_graph(tmp_path / "b", tiny_spec, b"new-graph")
    new_file = second.artifacts["onnx-fp32"]["file"]
    assert new_file.startswith("rev-") and new_file.endswith("/model.fp32.onnx")
    assert not (tmp_path / "b" / first.artifacts["onnx-fp32"]["file"]).exists()  # removed after the switch
    assert Bundle.open(tmp_path / "b").artifact_path("onnx-fp32").read_bytes() == b"new-graph"
    third = one_graph(tmp_path / "b", tiny_spec, b"third-graph")  # the usual name is free again
    assert third.artifacts["onnx-fp32"]["file"] == "model.fp32.onnx"
    assert not (tmp_path / "b" / new_file.split("/")[0]).exists()  # the emptied rev- folder went too
    same = one_graph(tmp_path / "b", tiny_spec, b"third-graph")  # the same bytes: the file is kept
    assert same.artifacts["onnx-fp32"]["file"] == "model.fp32.onnx"


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    from ganrt.fileio import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_weights_cast_from_the_old_weights_go_when_the_weights_change(tmp_path, tiny_spec, write_bundle):
    """torch fp16/bf16 weights are cast from the fp32 weights: new weights without them must drop them."""
    import numpy as np
    from safetensors.numpy import save

    def weights(value):
        return (save({"G.w": np.full(4, value, np.float32)}, metadata={"created": str(value)}),
                {"file": "generator.safetensors", "kind": "weights", "precision": "fp32"})

    cast = (save({"G.w": np.ones(4, np.float16)}), {"file": "generator.fp16.safetensors", "kind": "weights",
                                                   "precision": "fp16", "made_by": {"cast_from": "weights"}})
    write_bundle(tmp_path / "b", tiny_spec, {"weights": weights(1.0), "weights-fp16": cast})
    same = write_bundle(tmp_path / "b", tiny_spec, {"weights": weights(1.0)})  # the same tensors: kept
    assert sorted(same.artifacts) == ["weights", "weights-fp16"]
    recast = (save({"G.w": np.ones(4, np.float16)}, metadata={"created": "later"}), cast[1])
    again = write_bundle(tmp_path / "b", tiny_spec, {"weights": weights(1.0), "weights-fp16": recast})
    assert again.artifacts["weights-fp16"]["file"] == "generator.fp16.safetensors"  # same tensors: file kept
    changed = write_bundle(tmp_path / "b", tiny_spec, {"weights": weights(2.0)})
    assert sorted(changed.artifacts) == ["weights"]
    assert not (tmp_path / "b" / "generator.fp16.safetensors").exists()
