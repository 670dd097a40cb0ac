"""Export options of the CPU fast path: --no-cpu-rewrite, bf16 as a precision, clear errors without OpenVINO."""

from __future__ import annotations

import sys

import pytest

from ganrt.errors import BackendUnavailable, ConfigError


def test_no_cpu_rewrite_ships_only_the_plain_graph(tiny_checkpoint, tmp_path):
    from ganrt.export import ExportOptions, export_checkpoint

    b = export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(max_batch=4, cpu_rewrite=False)).bundle
    assert set(b.artifacts) == {"weights", "onnx-fp32"} and b.artifacts["onnx-fp32"]["rewritten"] is False


@pytest.mark.parametrize(("kwargs", "match"), [({"precisions": ("fp32", "bf16")}, "precision bf16.*needs OpenVINO"),
                                               ({"openvino_int8": True}, "--openvino-int8 needs OpenVINO")])
def test_bf16_and_openvino_int8_without_openvino_fail_before_any_work(tiny_checkpoint, tmp_path, monkeypatch,
                                                                       kwargs, match):
    from ganrt.export import ExportOptions, export_checkpoint

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailable, match=match + r".*pip install 'ganrt\[cpu\]'"):
        export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(**kwargs))
    assert not (tmp_path / "b").exists()


def test_cli_precision_list_takes_bf16_and_names_the_choices():
    from ganrt.export.cli import _precisions

    assert _precisions("fp32, bf16") == ("fp32", "bf16")
    with pytest.raises(ConfigError, match="fp32, fp16, int8, bf16; got 'fp32,bf8'"):
        _precisions("fp32,bf8")
