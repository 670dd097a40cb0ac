"""The ConvTranspose rewrite pass (ganrt.export.rewrite): exact on random weights for every configuration it
rewrites, leaves (and reports) the ones it cannot express exactly, keeps the dynamic batch axis, and takes a
DCGAN generator end to end within one uint8 level."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganrt.export.rewrite import rewrite_conv_transpose

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(module: torch.nn.Module, example: torch.Tensor, path) -> "onnx.ModelProto":
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(module.eval(), (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    return onnx.load(str(path))


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _check(model) -> None:
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


class _Deconv(torch.nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, padding, bias, activation=None, **extra) -> None:
        super().__init__()
        self.deconv = torch.nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=bias, **extra)
        self.act = activation or torch.nn.Identity()
        with torch.no_grad():  # random weights and bias well away from zero, so a wrong tap shows
            self.deconv.weight.normal_()
            if bias:
                self.deconv.bias.normal_()

    def forward(self, x):
        return self.act(self.deconv(x))


# (kernel, stride, padding, input size): DCGAN's upsampling, its 2x2 form, and the general k % s == 0 cases
REWRITTEN = [
    pytest.param(4, 2, 1, 5, id="k4-s2-p1"),
    pytest.param(2, 2, 0, 5, id="k2-s2-p0"),
    pytest.param(4, 2, 0, 4, id="k4-s2-p0"),
    pytest.param(6, 2, 2, 4, id="k6-s2-p2"),
    pytest.param(6, 3, 1, 3, id="k6-s3-p1"),
    pytest.param(8, 4, 2, 3, id="k8-s4-p2"),
    pytest.param(3, 1, 1, 5, id="k3-s1-p1"),
    pytest.param((4, 2), 2, (1, 0), 4, id="k4x2-s2-p1x0"),
]


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("kernel,stride,padding,size", REWRITTEN)
def test_rewrite_is_exact_on_random_weights(kernel, stride, padding, size, bias, tmp_path):
    torch.manual_seed(0)
    module = _Deconv(3, 5, kernel, stride, padding, bias)
    model = _export(module, torch.randn(2, 3, size, size), tmp_path / "m.onnx")
    assert _ops(model).count("ConvTranspose") == 1

    x = np.random.default_rng(1).standard_normal((3, 3, size, size)).astype(np.float32)
    ref = _run(model, x)
    with torch.no_grad():
        assert np.allclose(ref, module(torch.from_numpy(x)).numpy(), atol=1e-4)  # the reference is torch's
    # phases of equal size (2p % s == 0) get a Conv each; other nodes keep the single form
    per_phase = stride > 1 and all(2 * p % stride == 0 for p in np.atleast_1d(padding))
    into = {"single": "Conv+DepthToSpace" if stride > 1 else "Conv",
            "phases": "Conv-per-phase+DepthToSpace" if per_phase else "Conv+DepthToSpace" if stride > 1 else "Conv"}
    for form in ("single", "phases"):
        rewritten, report = rewrite_conv_transpose(model, form=form)

        _check(rewritten)
        assert "ConvTranspose" not in _ops(rewritten)
        assert len(report.rewritten) == 1 and not report.left
        assert report.rewritten[0]["into"] == into[form]
        out = _run(rewritten, x)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max(), form
    if per_phase:
        assert report.rewritten[0]["macs_ratio"] == 1.0  # no border work


def test_auto_form_picks_phases_for_wide_layers_and_single_for_narrow_ones(tmp_path):
    from ganrt.export.rewrite import PHASES_MIN_CHANNELS

    torch.manual_seed(3)
    wide, narrow = PHASES_MIN_CHANNELS, PHASES_MIN_CHANNELS - 1
    module = torch.nn.Sequential(_Deconv(4, wide, 4, 2, 1, True, torch.nn.ReLU()),
                                 _Deconv(wide, narrow, 4, 2, 1, True, torch.nn.Tanh()))
    model = _export(module, torch.randn(2, 4, 5, 5), tmp_path / "m.onnx")
    x = np.random.default_rng(4).standard_normal((3, 4, 5, 5)).astype(np.float32)
    ref = _run(model, x)

    rewritten, report = rewrite_conv_transpose(model, form="auto")

    _check(rewritten)
    assert report.form == "auto"
    assert [r["into"] for r in report.rewritten] == ["Conv-per-phase+DepthToSpace", "Conv+DepthToSpace"]
    assert _ops(rewritten).count("Conv") == 4 + 1
    out = _run(rewritten, x)
    assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("kernel,stride,padding", [(4, 1, 0), (4, 2, 1), (3, 2, 1)], ids=["k4-s1-p0", "k4-s2-p1",
                                                                                          "k3-s2-p1"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_rewrite_of_a_1x1_input_is_a_matrix_product(kernel, stride, padding, bias, tmp_path):
    torch.manual_seed(1)
    module = _Deconv(7, 4, kernel, stride, padding, bias)
    model = _export(module, torch.randn(2, 7, 1, 1), tmp_path / "m.onnx")

    rewritten, report = rewrite_conv_transpose(model)

    _check(rewritten)
    assert report.rewritten[0]["into"] == "Gemm+Reshape"
    assert "Gemm" in _ops(rewritten) and "ConvTranspose" not in _ops(rewritten)
    x = np.random.default_rng(2).standard_normal((4, 7, 1, 1)).astype(np.float32)
    ref, out = _run(model, x), _run(rewritten, x)
    assert out.shape == ref.shape == (4, 4, kernel - 2 * padding, kernel - 2 * padding)
    assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("activation,op", [(torch.nn.ReLU(), "Relu"), (torch.nn.LeakyReLU(0.2), "LeakyRelu")])
def test_activation_is_applied_before_the_interleave(activation, op, tmp_path):
    torch.manual_seed(2)
    module = _Deconv(4, 3, 4, 2, 1, True, activation=activation)
    model = _export(module, torch.randn(2, 4, 6, 6), tmp_path / "m.onnx")

    x = np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32)
    ref = _run(model, x)
    for form in ("single", "phases"):
        rewritten, report = rewrite_conv_transpose(model, form=form)

        _check(rewritten)
        ops = _ops(rewritten)
        assert ops.count(op) == 1 and ops.index("Conv") < ops.index(op) < ops.index("DepthToSpace")
        assert report.rewritten[0]["activation"] == op
        if op == "LeakyRelu":
            node = next(n for n in rewritten.graph.node if n.op_type == op)
            assert onnx.helper.get_attribute_value(node.attribute[0]) == pytest.approx(0.2)
        out = _run(rewritten, x)
        assert np.abs(out - ref).max() < 1e-4 * np.abs(ref).max(), form


@pytest.mark.parametrize("extra,reason", [
    ({"output_padding": 1}, "output_padding"),
    ({"groups": 2}, "group=2"),
    ({"dilation": 2}, "dilations"),
], ids=["output_padding", "groups", "dilation"])
def test_inexpressible_nodes_are_left_and_reported(extra, reason, tmp_path):
    torch.manual_seed(3)
    module = _Deconv(4, 4, 4, 2, 1, True, **extra)
    model = _export(module, torch.randn(2, 4, 5, 5), tmp_path / "m.onnx")

    rewritten, report = rewrite_conv_transpose(model)

    assert not report.rewritten and len(report.left) == 1
    assert reason in report.left[0]["reason"]
    assert _ops(rewritten) == _ops(model)
    x = np.random.default_rng(4).standard_normal((2, 4, 5, 5)).astype(np.float32)
    assert np.array_equal(_run(model, x), _run(rewritten, x))


def _handmade(pads, strides, kernel=(4, 4), output_shape=None, opset=18) -> "onnx.ModelProto":
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 3, *kernel), dtype=np.float32), "w")
    attrs = {"pads": pads, "strides": strides, "kernel_shape": list(kernel)}
    if output_shape:
        attrs["output_shape"] = output_shape
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, None, None])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("pads,strides,kernel,reason", [
    ([1, 1, 0, 0], [2, 2], (4, 4), "asymmetric pads"),
    ([1, 1, 1, 1], [2, 1], (4, 4), "strides [2, 1] differ"),
    ([1, 1, 1, 1], [2, 2], (3, 3), "not a multiple of the stride"),
    ([4, 4, 4, 4], [2, 2], (4, 4), "not smaller than the kernel"),
], ids=["asymmetric", "unequal-strides", "k3-s2", "pad-too-large"])
def test_handmade_inexpressible_nodes_are_left(pads, strides, kernel, reason):
    model = _handmade(pads, strides, kernel)
    rewritten, report = rewrite_conv_transpose(model)
    assert report.left == [{"node": "up", "reason": report.left[0]["reason"]}]
    assert reason in report.left[0]["reason"]
    assert _ops(rewritten) == ["ConvTranspose"]


def test_rewrite_keeps_the_dynamic_batch_and_leaves_the_input_model_alone(tmp_path):
    torch.manual_seed(4)
    module = _Deconv(3, 2, 4, 2, 1, True, activation=torch.nn.ReLU())
    model = _export(module, torch.randn(2, 3, 4, 4), tmp_path / "m.onnx")
    before = model.SerializeToString()

    rewritten, report = rewrite_conv_transpose(model)

    assert model.SerializeToString() == before
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    for old, new in zip(list(model.graph.input) + list(model.graph.output),
                        list(rewritten.graph.input) + list(rewritten.graph.output), strict=True):
        assert old.name == new.name and dims(old) == dims(new)
    assert isinstance(dims(rewritten.graph.input[0])[0], str), "batch axis must stay symbolic"
    inferred = onnx.shape_inference.infer_shapes(rewritten, strict_mode=True)
    assert dims(inferred.graph.output[0])[1:] == [2, 8, 8]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        assert _run(rewritten, x).shape == (batch, 2, 8, 8)
    assert not {"w", "deconv.weight"} & {t.name for t in rewritten.graph.initializer}, "old weights dropped"
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False))["form"] == "single"


def test_opset_below_11_is_left_with_the_reason():
    rewritten, report = rewrite_conv_transpose(_handmade([1, 1, 1, 1], [2, 2], opset=10))
    assert not report.changed and "opset 10" in report.left[0]["reason"]
    assert _ops(rewritten) == ["ConvTranspose"]


def test_handmade_node_is_rewritten_exactly():
    model = _handmade([1, 1, 1, 1], [2, 2])
    rewritten, report = rewrite_conv_transpose(model)
    _check(rewritten)
    assert report.rewritten[0]["node"] == "up"
    assert report.rewritten[0]["macs_ratio"] == pytest.approx(36 / 25)  # a 6x6 conv output for a 5x5 input
    x = np.random.default_rng(6).standard_normal((2, 2, 5, 5)).astype(np.float32)
    assert np.abs(_run(rewritten, x) - _run(model, x)).max() < 1e-4 * np.abs(_run(model, x)).max()


def test_unknown_form_is_refused():
    from ganrt.errors import ConfigError

    with pytest.raises(ConfigError, match="form must be one of"):
        rewrite_conv_transpose(_handmade([1, 1, 1, 1], [2, 2]), form="fast")


def test_graph_without_conv_transpose_is_returned_unchanged():
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph)
    rewritten, report = rewrite_conv_transpose(model)
    assert not report.changed and report.to_dict()["rewritten"] == [] and report.left == []
    assert rewritten.SerializeToString() == model.SerializeToString()


def test_dcgan_generator_end_to_end_within_one_level(tiny_checkpoint, tmp_path, tool):
    vivid_weights = tool("cpu_fastpath_probe").vivid_weights
    from ganrt.checkpoint import load_generator
    from ganrt.latents import labels_from_seeds, latents_from_seeds
    from ganrt.postprocess import ToUint8NHWC

    g, spec = load_generator(tiny_checkpoint)
    # random init draws near-constant images; larger weights and BatchNorm stats of one batch give varied ones
    torch.manual_seed(5)
    vivid_weights(g, torch.randn(32, spec.latent_dim), torch.randint(0, spec.num_classes, (32,)))

    class WithPost(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g, self.post = g.eval(), ToUint8NHWC(spec.output_range)

        def forward(self, z, labels):
            return self.post(self.g(z, labels))

    seeds = list(range(6))
    z, labels = latents_from_seeds(seeds, spec.latent_dim), labels_from_seeds(seeds, spec.num_classes)
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "g.onnx"
    torch.onnx.export(WithPost().eval(), (torch.from_numpy(z[:2]), torch.from_numpy(labels[:2])), str(path),
                      input_names=["z", "labels"], output_names=["images"],
                      dynamic_shapes=({0: batch}, {0: batch}), dynamo=True, verbose=False)
    model = onnx.load(str(path))
    n_deconv = _ops(model).count("ConvTranspose")

    feeds = {"z": z, "labels": labels}
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    with torch.no_grad():
        torch_ref = WithPost()(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert ref.std() > 20, "reference images are near constant: the test would prove nothing"
    for form, into in (("single", "Conv+DepthToSpace"), ("phases", "Conv-per-phase+DepthToSpace")):
        rewritten, report = rewrite_conv_transpose(model, form=form)

        _check(rewritten)
        assert len(report.rewritten) == n_deconv >= 3 and not report.left
        assert report.rewritten[0]["into"] == "Gemm+Reshape"
        assert {r["into"] for r in report.rewritten[1:]} == {into}
        out = ort.InferenceSession(rewritten.SerializeToString()).run(None, feeds)[0]
        assert out.dtype == np.uint8 and out.shape == (6, spec.height, spec.width, spec.channels)
        assert np.abs(out.astype(np.int16) - ref.astype(np.int16)).max() <= 1, form
        assert np.abs(out.astype(np.int16) - torch_ref.astype(np.int16)).max() <= 1, form
