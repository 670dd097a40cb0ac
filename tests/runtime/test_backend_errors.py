"""Honest errors at the backend boundary: library exceptions become GanrtErrors keeping the library's words,
a graph that does not return what the manifest says is a BundleError naming the artifact (never cast), and an
unusable library says why instead of reading as "not installed"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganrt.errors import BackendError, BackendUnavailable, BundleError
from ganrt.fileio import sha256_file
from ganrt.runtime import load
from ganrt.runtime.machine import Availability, library_probe
from ganrt.runtime.selection import select


def _float_output_graph(path, spec, batch_dim="batch"):
    """An ONNX graph with the bundle's inputs whose output is float32 [B, H, W, C] instead of uint8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pixels = spec.height * spec.width * spec.channels
    w = numpy_helper.from_array(np.full((spec.latent_dim, pixels), 0.01, np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, spec.height, spec.width, spec.channels], np.int64), "shape")
    lab = helper.make_node("Cast", ["labels"], ["labf"], to=TensorProto.FLOAT)
    nodes = [helper.make_node("MatMul", ["z", "w"], ["flat"]), lab,
             helper.make_node("Unsqueeze", ["labf", "axis"], ["lab2"]),
             helper.make_node("Add", ["flat", "lab2"], ["sum"]),
             helper.make_node("Reshape", ["sum", "shape"], ["images"])]
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    graph = helper.make_graph(
        nodes, "float-out",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch_dim, spec.latent_dim]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch_dim])],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       [batch_dim, spec.height, spec.width, spec.channels])],
        initializer=[w, shape, axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


@pytest.fixture
def swapped_bundle(edit_bundle):
    """The bundle with its fp32 graph replaced by a float-output one, the manifest's hash updated to match."""
    from ganrt.bundle import Bundle

    dest = edit_bundle()
    spec = Bundle.open(dest).spec
    _float_output_graph(dest / "model.fp32.onnx", spec)
    manifest = json.loads((dest / "manifest.json").read_text())
    for entry in manifest["artifacts"].values():
        if entry["file"] in ("model.fp32.onnx", "model.fp32.rw.onnx"):
            if entry["file"] == "model.fp32.rw.onnx":
                _float_output_graph(dest / entry["file"], spec)
            entry["sha256"] = sha256_file(dest / entry["file"])
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_graph_returning_another_dtype_is_a_bundle_error_naming_the_artifact(swapped_bundle, backend):
    with pytest.raises(BundleError, match=r"artifact 'onnx-fp32(-rw)?' returns float32 images, but the bundle's "
                                          r"manifest says uint8"):
        load(swapped_bundle, backend=backend, precision="fp32")


def test_a_library_failure_while_running_is_a_backend_error_with_its_words(bundle_dir, monkeypatch):
    with load(bundle_dir, backend="onnxruntime") as gen:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail

        class Exploding:
            def run(self, *args, **kwargs):
                raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node")

        gen._runner._session = Exploding()
        with pytest.raises(BackendError, match=r"onnxruntime-fp32 failed on a batch of 2: \[ONNXRuntimeError\].*Conv"):
            gen.generate(seeds=[0, 1], labels=0)


def test_a_library_failure_while_loading_is_backend_unavailable_with_its_words(bundle_dir, monkeypatch):
    from ganrt.runtime.onnxruntime_backend import OnnxRuntimeBackend

    def explode(self, *args, **kwargs):
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(OnnxRuntimeBackend, "__init__", explode)
    with pytest.raises(BackendUnavailable, match=r"onnxruntime-fp32 could not be loaded .*RuntimeError: CUDA driver"):
        load(bundle_dir, backend="onnxruntime")


def test_a_probe_says_not_installed_or_why_an_installed_library_is_unusable():
    assert library_probe("ganrt_no_such_module", lambda m: 1) == (None, "ganrt_no_such_module is not installed")
    value, why = library_probe("json", lambda m: 1 / 0)
    assert value is None and why == "json is installed but unusable (ZeroDivisionError: division by zero)"
    assert library_probe("json", lambda m: m.__name__) == ("json", None)


def test_an_unusable_library_is_named_with_its_error_in_the_reason_and_the_refusal():
    broken = Availability(cpu="test", ort_providers=("CPUExecutionProvider",),
                          problems={"openvino": "openvino is installed but unusable (ImportError: libtbb.so.12: "
                                                "cannot open shared object file)"})
    manifest = {"artifacts": {"onnx-fp32": {"kind": "onnx", "precision": "fp32", "passed": True}}}
    with pytest.raises(BackendUnavailable, match="libtbb.so.12: cannot open shared object file"):
        select(manifest, broken, backend="openvino")
    choice = select(manifest, broken)
    assert choice.variant == "onnxruntime-fp32" and "openvino unusable here" in choice.reason
    assert "libtbb" in choice.reason


def test_inspect_lists_what_runs_here_and_why_a_backend_cannot(bundle_dir):
    from click.testing import CliRunner

    from ganrt.cli import cli

    out = CliRunner().invoke(cli, ["inspect", str(bundle_dir)])
    assert out.exit_code == 0, out.output
    assert "runs here: " in out.output and "onnxruntime-fp32" in out.output and "torch-fp32" in out.output
    assert "tensorrt:" in out.output
    data = json.loads(CliRunner().invoke(cli, ["inspect", str(bundle_dir), "--json"]).output)
    assert "onnxruntime-fp32" in data["here"]["runnable"] and "tensorrt" in data["here"]["unavailable"]


def test_a_new_backend_rows_probe_lands_under_its_name_not_in_a_typeerror(monkeypatch):
    """Availability's fields are the built-in rows'; a new row's probe once raised TypeError in Availability.probe."""
    import sys
    import types

    from ganrt.runtime import backends
    from ganrt.runtime.backends import BackendRow, Choice, Probe

    module = types.ModuleType("ganrt_test_new_backend")
    module.probe = lambda: Probe({"coreml": "8.1", "ane": True})

    def variants(view, avail, row):
        found = avail.extra.get(row.name, {})
        return ([Choice(row.name, "fp32", "cpu", "onnx-fp32", (), True, rank=0.5)] if found.get("ane") else []), []

    module.variants = variants
    monkeypatch.setitem(sys.modules, module.__name__, module)
    row = BackendRow("newbackend", module.__name__, "Runner", rank=0.5, devices=("cpu",))
    monkeypatch.setitem(backends.BACKENDS, row.name, row)

    avail = Availability.probe()
    assert avail.extra["newbackend"] == {"coreml": "8.1", "ane": True}
    manifest = {"artifacts": {"onnx-fp32": {"kind": "onnx", "precision": "fp32", "passed": True}}}
    assert select(manifest, avail).variant == "newbackend-fp32"
