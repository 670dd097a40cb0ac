"""fp16 and int8 graphs: built from the fp32 graph, verified, kept nodes and quantization settings recorded."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def three_precision_bundle(tiny_checkpoint, tmp_path_factory):
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("bundle") / "b"
    options = ExportOptions(precisions=("fp16", "int8"), max_batch=5, calibration_size=16)
    return export_checkpoint(tiny_checkpoint, out, options=options).bundle


def test_all_three_precisions_are_written_with_parity(three_precision_bundle):
    b = three_precision_bundle
    assert {"weights", "onnx-fp32", "onnx-fp32-rw", "onnx-fp16", "onnx-int8"} == set(b.artifacts)
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
        a = b.artifacts[name]
        assert a["passed"] is True, (name, a["parity"])
        assert a["parity"]["batch_sizes"] == [1, 3, 5] and a["parity"]["n_images"] == 9
        assert a["parity"]["nonfinite"] == 0
    assert b.artifacts["onnx-fp16"]["parity"]["max_abs_diff"] <= 8


def test_fp16_graph_has_fp32_io_fp16_weights_and_lists_kept_nodes(three_precision_bundle):
    a = three_precision_bundle.artifacts["onnx-fp16"]
    model = onnx.load(str(three_precision_bundle.artifact_path("onnx-fp16")))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == ["images"]
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    kept = a["made_by"]["kept_nodes"]
    reasons = {k["reason"] for k in kept}
    assert "final-layers" in reasons
    kept_ops = {k["op"] for k in kept}
    assert {"Tanh", "ConvTranspose"} <= kept_ops  # the last layer and the tail stay fp32
    assert 0 < a["made_by"]["nodes_fp16"] < a["made_by"]["nodes_total"]


def test_fp16_keeps_nodes_whose_values_leave_the_safe_range(tiny_spec):
    from ganrt.export import graph as G
    from ganrt.export.fp16 import convert_fp16
    from ganrt.models import build_generator

    torch.manual_seed(0)
    g = build_generator(tiny_spec).eval()
    with torch.no_grad():  # blow up the first layer's activations beyond fp16's range
        g.net[0].weight.mul_(1e6)
    module = G.GraphModule(G.prepare_generator(g), tiny_spec)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        G.export_onnx(module, tiny_spec, Path(d) / "m.onnx", log=lambda s: None)
        model, _ = G.simplify(onnx.load(str(Path(d) / "m.onnx")))
    _, info = convert_fp16(model, tiny_spec, calibration_size=8)
    by_reason = {k["name"]: k for k in info["kept_nodes"] if k["reason"] == "range"}
    assert by_reason, info["kept_nodes"]
    assert all(k["max_abs"] > info["safe_max"] for k in by_reason.values())


def test_int8_graph_is_symmetric_qdq_per_channel_and_leaves_the_tail_alone(three_precision_bundle):
    from onnx import numpy_helper

    a = three_precision_bundle.artifacts["onnx-int8"]
    model = onnx.load(str(three_precision_bundle.artifact_path("onnx-int8")))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    per_channel = False
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), n.name  # symmetric int8 (no int32 bias): TensorRT-consumable
            per_channel |= zp.size > 1
    assert per_channel
    tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
    consumers = [n for n in model.graph.node if any(o in n.input for o in tanh.output)]
    assert all(c.op_type != "QuantizeLinear" for c in consumers)  # tanh output never quantized
    assert a["made_by"]["op_types"] == ["Conv", "ConvTranspose", "Gemm", "MatMul"]
    assert a["made_by"]["calibration"]["latents"] == 16


def test_int8_op_selection_is_a_parameter(tiny_checkpoint, tmp_path):
    from ganrt.export import ExportOptions, export_checkpoint

    b = export_checkpoint(tiny_checkpoint, tmp_path / "b",
                          options=ExportOptions(precisions=("int8",), max_batch=2, calibration_size=8,
                                                int8_op_types=("Gather",))).bundle
    model = onnx.load(str(b.artifact_path("onnx-int8")))
    conv_inputs = {i for n in model.graph.node if n.op_type == "ConvTranspose" for i in n.input}
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not conv_inputs & dq_outputs  # convolutions untouched when only Gather is selected
    assert b.artifacts["onnx-int8"]["made_by"]["op_types"] == ["Gather"]
