"""The graphs TensorRT builds engines from: the uint8 tail (layout change on float, Cast(UINT8) last, the same
pixels on every CPU runtime as the old tail), and the TensorRT lint (``ganrt inspect --lint tensorrt``):
clean on what ganrt exports, a named node for each documented rule a graph breaks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def every_graph(tmp_path_factory, tiny_checkpoint):
    """A bundle with the fp32, fp16 and int8 graphs (and the rewritten fp32 graph)."""
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("trt-graphs") / "bundle"
    return export_checkpoint(tiny_checkpoint, out, options=ExportOptions(precisions=("fp32", "fp16", "int8"),
                                                                         max_batch=8)).bundle


def _graphs(bundle):
    return {n: onnx.load(str(bundle.artifact_path(n))) for n, a in bundle.artifacts.items() if a["kind"] == "onnx"}


def _types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}


def test_every_graph_transposes_on_float_and_casts_to_uint8_last(every_graph):
    graphs = _graphs(every_graph)
    assert {"onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-fp32-rw"} <= set(graphs)
    for name, model in graphs.items():
        producer = {o: n for n in model.graph.node for o in n.output}
        cast = producer["images"]
        assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.UINT8, name
        transpose = producer[cast.input[0]]
        types = _types(model)
        assert transpose.op_type == "Transpose" and types[transpose.output[0]] == TensorProto.FLOAT, name
        uint8 = [t for t, ty in types.items() if ty == TensorProto.UINT8]
        assert uint8 == ["images"], f"{name}: UINT8 tensors other than the output: {uint8}"


def _old_tail(model):
    """The graph with the tail ganrt shipped before: Round -> Cast(UINT8) -> Transpose -> images."""
    import copy

    m = copy.deepcopy(model)
    producer = {o: n for n in m.graph.node for o in n.output}
    cast = producer["images"]
    transpose = producer[cast.input[0]]
    rounded = transpose.input[0]
    cast.input[0], cast.output[0] = rounded, "uint8_nchw"
    transpose.input[0], transpose.output[0] = "uint8_nchw", "images"
    nodes = [n for n in m.graph.node if n is not cast and n is not transpose] + [cast, transpose]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def test_the_new_tail_draws_the_same_pixels_as_the_old_on_every_cpu_runtime(every_graph, tmp_path):
    from ganrt.export.graph import sample_inputs
    from ganrt.postprocess import ToUint8NHWC
    from ganrt.runtime import load

    spec = every_graph.spec
    feeds = sample_inputs(spec, list(range(12)))
    for name in ("onnx-fp32", "onnx-fp16", "onnx-int8"):
        model = onnx.load(str(every_graph.artifact_path(name)))
        new, old = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                    for m in (model, _old_tail(model)))
        a, b = new.run(["images"], feeds)[0], old.run(["images"], feeds)[0]
        assert a.dtype == np.uint8 and np.array_equal(a, b), f"{name}: onnxruntime pixels changed"
        ov = pytest.importorskip("openvino")
        core = ov.Core()
        outs = [core.compile_model(core.read_model(str(p)), "CPU")(feeds)[0]
                for p in _saved(tmp_path, name, model)]
        assert np.array_equal(outs[0], outs[1]), f"{name}: OpenVINO pixels changed"
    x = torch.randn(3, 2, 5, 7) * 1.2  # values past the range and on .5 boundaries after scaling
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 1 / 255 - 1, 3 / 255 - 1])
    old = torch.clamp((x + 1) * 127.5, 0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(ToUint8NHWC((-1.0, 1.0))(x), old)
    labels = [s % 10 for s in range(12)]
    with load(every_graph.path, backend="torch", device="cpu") as gen:  # the torch runtime, on the new module
        ref = gen.generate(seeds=range(12), labels=labels)
    with load(every_graph.path, backend="onnxruntime", precision="fp32") as gen:
        assert np.abs(gen.generate(seeds=range(12), labels=labels).astype(int) - ref).max() <= 1


def _saved(tmp_path, name, model):
    paths = [tmp_path / f"{name}.new.onnx", tmp_path / f"{name}.old.onnx"]
    onnx.save(model, str(paths[0]))
    onnx.save(_old_tail(model), str(paths[1]))
    return paths


# -- the lint ---------------------------------------------------------------------------------------------------
def test_every_graph_ganrt_exports_lints_clean_and_the_old_tail_names_its_transpose(every_graph):
    from ganrt.export.tensorrt_lint import lint_model

    for name, model in _graphs(every_graph).items():
        for target in ("10", "11"):
            assert lint_model(model, target=target) == [], name
        old = lint_model(_old_tail(model))
        assert any(f.op == "Transpose" and f.rule == "types" and "UINT8" in f.message and f.node for f in old), old


def test_inspect_lint_tensorrt_passes_on_a_bundle_and_fails_naming_a_planted_node(every_graph, tmp_path):
    import shutil

    from click.testing import CliRunner

    from ganrt.cli import cli

    ok = CliRunner().invoke(cli, ["inspect", str(every_graph.path), "--lint", "tensorrt"])
    assert ok.exit_code == 0, ok.output
    assert "onnx-int8: clean" in ok.output and "0 error(s)" in ok.output and "6d0ab7be" in ok.output

    planted = tmp_path / "planted"
    shutil.copytree(every_graph.path, planted)
    path = planted / every_graph.artifact("onnx-fp32")["file"]
    model = _old_tail(onnx.load(str(path)))
    model.graph.node[-1].name = "planted_uint8_transpose"
    onnx.save(model, str(path))
    bad = CliRunner().invoke(cli, ["inspect", str(planted), "--lint", "tensorrt", "--no-verify", "--trt-version",
                                   "11"])
    assert bad.exit_code == 1, bad.output
    assert "onnx-fp32: error: planted_uint8_transpose (Transpose): input 0 is UINT8" in bad.output
    data = CliRunner().invoke(cli, ["inspect", str(planted), "--lint", "tensorrt", "--no-verify", "--json"])
    import json

    report = json.loads(data.output)["lint"]
    assert report["errors"] >= 1 and report["targets"] == ["10", "11"]


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _lint(model, target="11"):
    from ganrt.export.tensorrt_lint import lint_model

    return [(f.level, f.rule, f.node) for f in lint_model(model, target=target)]


def test_unsupported_ops_foreign_domains_and_opsets_are_named():
    x = _vi("x", TensorProto.FLOAT, ["batch", 4])
    y = _vi("y", TensorProto.FLOAT, ["batch", 4])
    assert ("error", "operators", "det") in _lint(_model([helper.make_node("Det", ["x"], ["y"], name="det")], [x], [y]))
    ms = helper.make_node("FusedGemm", ["x", "x"], ["y"], name="ms", domain="com.microsoft")
    assert ("error", "operators", "ms") in _lint(_model([ms], [x], [y]))
    relu = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    assert _lint(_model(relu, [x], [y], opset=25), "11") == []
    assert ("error", "opset", None) in _lint(_model(relu, [x], [y], opset=25), "10")  # 10.x parses up to 24


def test_types_an_op_does_not_take_and_uint8_inside_the_network_are_named():
    x = _vi("x", TensorProto.FLOAT, ["batch", 4])
    out = _vi("y", TensorProto.UINT8, ["batch", 4])
    nodes = [helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8, name="to_u8"),
             helper.make_node("Relu", ["u"], ["y"], name="relu_u8")]
    found = _lint(_model(nodes, [x], [out]))
    assert ("error", "types", "relu_u8") in found and ("error", "types", "to_u8") in found
    u8_in = _vi("img", TensorProto.UINT8, ["batch", 4])
    cast_in = [helper.make_node("Cast", ["img"], ["y"], to=TensorProto.FLOAT, name="from_u8")]
    assert _lint(_model(cast_in, [u8_in], [_vi("y", TensorProto.FLOAT, ["batch", 4])])) == []
    d = _vi("d", TensorProto.DOUBLE, ["batch", 4])
    assert ("warning", "types", "dbl") in _lint(_model([helper.make_node("Relu", ["d"], ["e"], name="dbl")], [d],
                                                      [_vi("e", TensorProto.DOUBLE, ["batch", 4])]))


def test_inputs_a_batch_profile_cannot_cover_are_named():
    relu = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    y = _vi("y", TensorProto.FLOAT, None)
    assert _lint(_model(relu, [_vi("x", TensorProto.FLOAT, ["batch", 4])], [y])) == []
    assert ("error", "shapes", None) in _lint(_model(relu, [_vi("x", TensorProto.FLOAT, ["batch", "width"])], [y]))
    assert ("error", "shapes", None) in _lint(_model(relu, [_vi("x", TensorProto.FLOAT, None)], [y]))


def test_resize_modes_outside_tensorrts_list_are_named():
    x = _vi("x", TensorProto.FLOAT, ["batch", 2, 4, 4])
    y = _vi("y", TensorProto.FLOAT, None)
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    cubic = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", name="rz")
    assert ("error", "restrictions", "rz") in _lint(_model([cubic], [x], [y], [scales]))
    nearest = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", name="rz")
    assert _lint(_model([nearest], [x], [y], [scales])) == []


def _qdq(axis=1, zero=0, activation_per_channel=False):
    """x -> Q/DQ (per tensor) -> ConvTranspose(DQ(int8 weights, per channel on ``axis``)) -> y."""
    x = _vi("x", TensorProto.FLOAT, ["batch", 2, 4, 4])
    y = _vi("y", TensorProto.FLOAT, None)
    inits = [helper.make_tensor("w", TensorProto.INT8, [2, 3, 2, 2], [1] * 24),
             helper.make_tensor("ws", TensorProto.FLOAT, [3 if axis == 1 else 2], [0.1] * (3 if axis == 1 else 2)),
             helper.make_tensor("wz", TensorProto.INT8, [3 if axis == 1 else 2], [0] * (3 if axis == 1 else 2)),
             helper.make_tensor("xs", TensorProto.FLOAT, [2] if activation_per_channel else [], [0.05] *
                                (2 if activation_per_channel else 1)),
             helper.make_tensor("xz", TensorProto.INT8, [2] if activation_per_channel else [], [zero] *
                                (2 if activation_per_channel else 1))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q", axis=1),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x", axis=1),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dq_w", axis=axis),
             helper.make_node("ConvTranspose", ["xd", "wd"], ["y"], name="deconv")]
    return _model(nodes, [x], [y], inits)


def test_qdq_patterns_tensorrt_cannot_fuse_are_named():
    assert _lint(_qdq()) == []  # what onnxruntime's QDQ quantizer writes for a ConvTranspose: weights on axis 1
    assert ("error", "qdq", "dq_w") in _lint(_qdq(axis=0))  # K of CKRS deconvolution weights is axis 1
    assert ("error", "qdq", "q") in _lint(_qdq(zero=3))
    assert ("error", "qdq", "q") in _lint(_qdq(activation_per_channel=True))
    dangling = _qdq()
    dangling.graph.node[1].input[0] = "x"  # the QuantizeLinear's output read by nobody
    assert ("error", "qdq", "q") in _lint(dangling)
