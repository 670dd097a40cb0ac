"""NNCF's calibration batch follows the graph's activation memory: a big generator calibrates one latent per item
instead of running the machine out of memory, and one that cannot fit at all is one line."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")

from ganrt.errors import ExportError  # noqa: E402


def _graph(path, channels: int, side: int) -> None:
    """x [batch, C, S, S] -> Relu -> Neg -> Relu -> y: two float activations and an output of C*S*S values each."""
    from onnx import TensorProto, helper

    shape = ["batch", channels, side, side]
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
         helper.make_node("Relu", ["b"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_activation_bytes_counts_every_intermediate_and_output_float_tensor_for_one_latent(tmp_path):
    from ganrt.export.openvino import activation_bytes

    _graph(tmp_path / "g.onnx", 8, 16)
    assert activation_bytes(tmp_path / "g.onnx") == 3 * 4 * 8 * 16 * 16


@pytest.mark.parametrize(("free_latents", "batch"), [(1000, 8), (8 * 4, 8), (3 * 4, 3), (2, 1), (1, 1)])
def test_the_calibration_batch_takes_at_most_its_share_of_the_memory_available(tmp_path, monkeypatch,
                                                                                free_latents, batch):
    from ganrt.export import openvino

    _graph(tmp_path / "g.onnx", 8, 16)
    per_latent = 3 * 4 * 8 * 16 * 16
    monkeypatch.setattr(openvino, "available_memory", lambda: free_latents * per_latent)
    assert openvino.CALIBRATION_MEMORY_SHARE == 0.25
    assert openvino.calibration_batch(tmp_path / "g.onnx") == batch


def test_a_graph_whose_one_latent_does_not_fit_is_refused_with_the_figures(tmp_path, monkeypatch):
    from ganrt.export import openvino

    _graph(tmp_path / "g.onnx", 64, 256)  # 48 MiB of activations and output per latent
    monkeypatch.setattr(openvino, "available_memory", lambda: 16 * 2**20)
    with pytest.raises(ExportError, match=r"about 48 MiB for this graph, and 16 MiB of memory is available"):
        openvino.calibration_batch(tmp_path / "g.onnx")


def test_unknown_memory_keeps_the_default_batch(tmp_path, monkeypatch):
    from ganrt.export import openvino

    _graph(tmp_path / "g.onnx", 8, 16)
    monkeypatch.setattr(openvino, "available_memory", lambda: None)
    assert openvino.calibration_batch(tmp_path / "g.onnx") == openvino.CALIBRATION_BATCH
