"""fp32 export: a checkpoint and a user's module become verified bundles with a dynamic batch axis."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def test_checkpoint_exports_to_a_verified_fp32_bundle(tiny_checkpoint, tiny_spec, tmp_path):
    from ganrt.bundle import Bundle
    from ganrt.checkpoint import load_generator
    from ganrt.export import ExportOptions, export_checkpoint
    from ganrt.latents import labels_from_seeds, latents_from_seeds

    bundle = export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(max_batch=8)).bundle
    assert set(bundle.artifacts) == {"weights", "onnx-fp32", "onnx-fp32-rw"}  # cpu_rewrite is on by default
    assert bundle.artifacts["onnx-fp32"]["rewritten"] is False and bundle.artifacts["onnx-fp32-rw"]["rewritten"]
    entry = bundle.artifacts["onnx-fp32"]
    assert entry["passed"] is True and entry["parity"]["max_abs_diff"] <= 1
    assert entry["parity"]["batch_sizes"] == [1, 3, 8] and entry["parity"]["nonfinite"] == 0
    assert entry["made_by"]["simplify"]["nodes_after"] <= entry["made_by"]["simplify"]["nodes_before"]
    assert bundle.graph["inputs"][1] == {"name": "labels", "dtype": "int64", "shape": ["batch"]}
    assert bundle.source["kind"] == "checkpoint"
    Bundle.open(bundle.path)  # hashes check

    # the shipped graph: inputs z, labels; one output images uint8 NHWC, batch axis dynamic and named
    sess = ort.InferenceSession(str(bundle.artifact_path("onnx-fp32")), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["z", "labels"]
    assert [o.name for o in sess.get_outputs()] == ["images"] and sess.get_inputs()[0].shape[0] == "batch"
    seeds = list(range(5))  # a batch size not verified
    z, labels = latents_from_seeds(seeds, tiny_spec.latent_dim), labels_from_seeds(seeds, tiny_spec.num_classes)
    images = sess.run(["images"], {"z": z, "labels": labels})[0]
    assert images.dtype == np.uint8 and images.shape == (5, 32, 32, 1)
    g, _ = load_generator(bundle.artifact_path("weights"))
    with torch.no_grad():
        ref = ((g(torch.from_numpy(z), torch.from_numpy(labels)) + 1) * 127.5).clamp(0, 255).round()
    assert np.abs(ref.permute(0, 2, 3, 1).numpy() - images).max() <= 1
    assert images.std() > 0


def test_float_nchw_output_keeps_raw_values(tiny_checkpoint, tmp_path):
    from ganrt.export import ExportOptions, export_checkpoint

    bundle = export_checkpoint(tiny_checkpoint, tmp_path / "b",
                               options=ExportOptions(max_batch=2, output_format="float-nchw")).bundle
    assert bundle.graph["outputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 1, 32, 32]}]
    sess = ort.InferenceSession(str(bundle.artifact_path("onnx-fp32")), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"z": np.zeros((2, 16), np.float32), "labels": np.array([0, 1])})
    assert len(out) == 1 and out[0].dtype == np.float32 and -1 <= out[0].min() < out[0].max() <= 1
    assert bundle.artifacts["onnx-fp32"]["passed"] is True


def test_users_own_module_exports_through_the_python_api(user_spec, tmp_path):
    from ganrt.bundle import Bundle
    from ganrt.checkpoint import load_generator
    from ganrt.errors import CheckpointError
    from ganrt.export import ExportOptions, export
    from ganrt.models import load_factory

    g = load_factory(user_spec.factory)()
    bundle = export(g, tmp_path / "b", spec=user_spec, options=ExportOptions(max_batch=4, precisions=("fp16",))).bundle
    entry = bundle.artifacts["onnx-fp32"]
    assert entry["passed"] is True and entry["parity"]["max_abs_diff"] <= 1
    # fp16 through Resize (kept fp32 by the converter's default block list) and InstanceNorm (kept: sensitive)
    fp16 = bundle.artifacts["onnx-fp16"]
    assert fp16["passed"] is True
    reasons = {k["op"]: k["reason"] for k in fp16["made_by"]["kept_nodes"]}
    assert reasons["Resize"] == "converter-default" and reasons["InstanceNormalization"] == "sensitive-op"
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["spec"]["factory"] == user_spec.factory and manifest["spec"]["arch"] == "external"
    assert manifest["source"]["class"].endswith("UpConvGenerator")
    # the weights rebuild through the factory alone, when the caller trusts the code the file names
    weights = Bundle.open(tmp_path / "b").artifact_path("weights")
    with pytest.raises(CheckpointError, match="imports and runs the code its spec names.*trust_code=True"):
        load_generator(weights)
    rebuilt, spec = load_generator(weights, trust_code=True)
    assert spec == user_spec
    for (k, a), b in zip(g.state_dict().items(), rebuilt.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
