"""The CPU fast path end to end on the tiny conditional DCGAN (contrast-scaled weights): export writes
onnx-fp32-rw, onnx-bf16 and the NNCF openvino-int8 IR with parity, and the runtime runs each within the
tolerance of its precision."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def fast_bundle(contrast_checkpoint, tmp_path_factory):
    import torch

    from ganrt.export import export_checkpoint

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fast") / "bundle"
    return export_checkpoint(contrast_checkpoint, out, precisions=("fp32", "bf16"), openvino_int8=True,
                             openvino_calibration_size=32, max_batch=16, verify_batch_cap=8)


@pytest.fixture(scope="module")
def reference(fast_bundle):
    from ganrt.runtime import load

    seeds, labels = list(range(200, 212)), np.arange(12) % 10
    with load(fast_bundle.path, backend="torch") as g:
        images = g.generate(seeds=seeds, labels=labels)
    assert images.std() > 20, "the reference images are nearly flat: parity would prove nothing"
    return seeds, labels, images


def _op_types(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_export_writes_the_rewritten_bf16_and_int8_artifacts_with_parity(fast_bundle):
    from ganrt.runtime.machine import openvino_cpu_capabilities

    b = fast_bundle
    assert {"onnx-fp32", "onnx-fp32-rw", "onnx-bf16", "openvino-int8", "openvino-int8-bin"} <= set(b.artifacts)
    assert "ConvTranspose" in _op_types(b.artifact_path("onnx-fp32"))  # onnx-fp32 is never altered
    assert "ConvTranspose" not in _op_types(b.artifact_path("onnx-fp32-rw"))
    plain, rw, bf16, int8 = (b.artifacts[n] for n in ("onnx-fp32", "onnx-fp32-rw", "onnx-bf16", "openvino-int8"))
    assert plain["rewritten"] is False and rw["rewritten"] is True and bf16["rewritten"] is True
    rewrite = rw["made_by"]["rewrite"]
    assert rewrite["form"] == "phases" and len(rewrite["rewritten"]) == 4 and rewrite["left"] == []
    assert rw["passed"] is True and rw["parity"]["max_abs_diff"] <= 1

    assert (bf16["runtime"], bf16["inference_hint"]) == ("openvino", "bf16")
    assert bf16["bf16_hardware"] == ("BF16" in (openvino_cpu_capabilities() or ()))
    assert bf16["parity"]["runner"] == "openvino-cpu-bf16" and bf16["passed"] is True

    assert (int8["kind"], int8["file"], int8["precision"]) == ("openvino-ir", "openvino/model.int8.xml", "int8")
    assert b.artifact_path("openvino-int8-bin").stat().st_size > 0
    assert int8["made_by"]["fake_quantize_nodes"] > 0 and len(int8["made_by"]["kept_fp32"]) == 1
    assert int8["parity"]["runner"] == "openvino-cpu-f32" and int8["passed"] is True
    assert int8["parity"]["psnr_db"] >= 25 and int8["parity"]["max_abs_diff"] > 0  # quantized, within tolerance


@pytest.mark.parametrize(("kwargs", "variant", "artifact", "max_levels", "min_psnr"), [
    ({"backend": "openvino", "precision": "fp32"}, "openvino-fp32", "onnx-fp32-rw", 1, None),
    ({"variant": "onnxruntime-fp32-rw"}, "onnxruntime-fp32-rw", "onnx-fp32-rw", 1, None),
    ({"backend": "openvino", "precision": "int8"}, "openvino-int8", "openvino-int8", None, 25.0),
])
def test_runtime_runs_each_fast_path_variant_within_its_tolerance(fast_bundle, reference, kwargs, variant, artifact,
                                                                   max_levels, min_psnr):
    from ganrt.parity import image_parity
    from ganrt.runtime import load

    seeds, labels, ref = reference
    with load(fast_bundle.path, threads=1, **kwargs) as g:
        assert (g.variant, g.artifact) == (variant, artifact)
        p = image_parity(ref, g.generate(seeds=seeds, labels=labels))
        p7 = image_parity(ref[:7], g.generate(seeds=seeds[:7], labels=labels[:7]))  # another batch shape
    for q in (p, p7):
        if max_levels is not None:
            assert q["max_abs_diff"] <= max_levels
        if min_psnr is not None:
            assert q["psnr_db"] >= min_psnr and q["mean_abs_diff"] <= 4.0


def test_bf16_runs_the_bf16_graph_or_falls_back_to_fp32_with_a_warning(fast_bundle, reference):
    from ganrt.export.verify import TOLERANCES
    from ganrt.parity import image_parity
    from ganrt.runtime import load
    from ganrt.runtime.machine import openvino_cpu_capabilities

    seeds, labels, ref = reference
    hardware = "BF16" in (openvino_cpu_capabilities() or ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load(fast_bundle.path, backend="openvino", precision="bf16", threads=1)
    with g:
        assert g.artifact == "onnx-bf16"
        if hardware:
            assert g.precision == "bf16"
        else:
            assert g.precision == "fp32" and "no bf16 support" in g.reason
            assert any("no bf16 support" in str(w.message) for w in caught)
        p = image_parity(ref, g.generate(seeds=seeds, labels=labels))
    assert not TOLERANCES["bf16"].failures(p)
