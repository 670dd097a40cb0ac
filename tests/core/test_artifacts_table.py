"""The table of artifacts (ganrt.artifacts): every row is buildable, runs on real backend rows, and is the one
"which artifact runs this precision" fact that the runtime's backends and the Triton writer both read."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

from ganrt import artifacts as table
from ganrt.bundle import ARTIFACT_KINDS, Bundle
from ganrt.precisions import PRECISIONS
from ganrt.runtime.backends import BACKENDS, BundleView
from ganrt.runtime.machine import Availability
from ganrt.spec import GeneratorSpec

EVERYTHING = SimpleNamespace(precisions=tuple(PRECISIONS), torch_precisions=("fp16", "bf16"), cpu_rewrite=True,
                             openvino_int8=True, tensorrt=True, artifacts=())
CPU = Availability(cpu="test", ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=True)


def test_every_row_is_built_by_an_export_function_and_run_by_backend_rows():
    for row in table.ARTIFACTS.values():
        module, function = row.build.split(":")
        assert module.startswith("ganrt.export.") and callable(getattr(importlib.import_module(module), function))
        assert row.asked(EVERYTHING) and row.kind in ARTIFACT_KINDS and row.tolerance in PRECISIONS
        assert row.runs and row.footprint > 0
        for run in row.runs:
            assert run.backend in BACKENDS and run.precision in PRECISIONS
            assert set(run.options) <= set(BACKENDS[run.backend].options), (row.name, run)


def test_which_artifact_runs_a_precision():
    every = dict.fromkeys(table.ARTIFACTS)
    assert table.pick(every, "openvino", "fp32") == "onnx-fp32-rw"  # measured faster on OpenVINO
    assert table.candidates("openvino", "bf16") == ("onnx-bf16", "onnx-fp32-rw", "onnx-fp32")
    assert table.pick({"onnx-fp32": {}}, "openvino", "bf16") == "onnx-fp32"
    assert table.pick(every, "onnxruntime", "fp32") == "onnx-fp32"  # the rewrite is its own variant, "-rw"
    assert table.pick(every, "onnxruntime", "fp32", ("rw",)) == "onnx-fp32-rw"
    assert table.pick(every, "onnxruntime", "bf16") is None  # onnx-bf16 is made for OpenVINO's hint
    assert table.pick(every, "torch", "fp16") == "weights-fp16" and table.pick({"weights": {}}, "torch", "fp16") == \
        "weights"
    assert table.casts("torch") == ("fp16", "bf16") and table.casts("openvino") == ("bf16",)
    assert table.casts("onnxruntime") == ()
    assert table.row_of("trt-fp16-sm89-trt10.13", {"kind": "engine", "precision": "fp16"}).name == "trt-fp16"
    assert table.row_of("openvino-int8-bin", {"kind": "other"}) is None


def _bundle(tmp_path):
    spec = GeneratorSpec(latent_dim=4, channels=1, height=8, width=8)
    arts = {name: {"file": f"{name}.bin", "kind": row.kind, "precision": row.precision, "passed": True,
                   "sha256": "0" * 64} for name, row in table.ARTIFACTS.items() if row.kind != "engine"}
    arts["openvino-int8"]["weights_artifact"] = "openvino-int8-bin"
    arts["openvino-int8-bin"] = {"file": "x.bin", "kind": "other", "precision": None, "sha256": "0" * 64}
    return Bundle(path=tmp_path, spec=spec, graph={"max_batch": 4}, artifacts=arts)


def test_the_runtime_and_the_triton_writer_read_the_same_fact(tmp_path):
    pytest.importorskip("tritonclient")
    from ganrt.export.triton import TRITON_BACKENDS, plan_models

    bundle = _bundle(tmp_path)
    runtime = {}
    for name in TRITON_BACKENDS:
        choices, _ = BACKENDS[name].variants(BundleView(bundle.artifacts, bundle.spec.to_dict()), CPU)
        runtime.update({c.variant: c.artifact for c in choices if c.device == "cpu"})
    models, _ = plan_models(bundle, "cpu", "m")
    triton = {m.variant: m.files.get("model.onnx") or m.files["model.xml"] for m in models}
    assert len(triton) == 7 and triton == runtime


def test_an_artifact_nobody_asked_for_is_refused_by_name():
    from ganrt.errors import ConfigError
    from ganrt.export import ExportOptions

    with pytest.raises(ConfigError, match=r"artifacts: 'coreml' is not a row of the table of artifacts; choose from "
                                          r"weights, onnx-fp32"):
        ExportOptions(artifacts=("coreml",)).checked()
