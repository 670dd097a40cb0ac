"""The bench runs the CPU fast-path variants beside their peers and reports ratios to onnxruntime fp32."""

from __future__ import annotations

from types import SimpleNamespace

from ganrt.benchmarks.harness import LoadedVariant, Timing, candidate_variants, summarize_runs
from ganrt.runtime.backends import Choice
from ganrt.runtime.machine import Availability

CPU = Availability(cpu="test CPU", ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=True)


def test_the_cpu_fast_path_variants_are_requested_beside_the_peers():
    """The candidates come from the table of backends: every variant of the bundle this machine can run,
    the peers every ratio is taken against first."""
    artifacts = {"weights": {"kind": "weights", "precision": "fp32"}}
    for name, kind in (("onnx-fp32", "onnx"), ("onnx-fp32-rw", "onnx"), ("onnx-bf16", "onnx"),
                       ("openvino-int8", "openvino-ir")):
        artifacts[name] = {"kind": kind, "precision": name.split("-")[1], "passed": True}
    artifacts["onnx-bf16"]["runtime"] = "openvino"
    choices, skipped = candidate_variants({"artifacts": artifacts}, CPU)
    names = [c.variant for c in choices]
    assert names[:3] == ["torch-fp32", "torch-fp32-compile", "onnxruntime-fp32"]
    for name in ("onnxruntime-fp32-rw", "openvino-fp32", "openvino-bf16", "openvino-int8"):
        assert name in names
    assert "onnxruntime-bf16" not in names  # onnx-bf16 is made for OpenVINO's bf16 hint
    assert "has no TensorRT engine" in skipped["tensorrt"]
    without_openvino = candidate_variants({"artifacts": artifacts}, Availability(
        cpu="test CPU", ort_providers=("CPUExecutionProvider",), problems={"openvino": "openvino is installed but "
                                                                                      "unusable (ImportError: x)"}))
    assert "ImportError: x" in without_openvino[1]["openvino"]


def test_runs_carry_ratios_to_onnxruntime_fp32():
    def variant(name, backend, precision):
        gen = SimpleNamespace(backend=backend, precision=precision)
        return LoadedVariant(name, Choice(backend, precision, "cpu", "x"), gen, 0.1, None, None, None)

    vs = [variant("torch-fp32", "torch", "fp32"), variant("onnxruntime-fp32", "onnxruntime", "fp32"),
          variant("openvino-int8", "openvino", "int8")]
    ms = {"torch-fp32": 8.0, "onnxruntime-fp32": 2.0, "openvino-int8": 0.5}
    timings = {(n, 4): Timing(n, 4, samples_ms=[t, t, t]) for n, t in ms.items()}
    runs = {r["variant"]: r for r in summarize_runs(vs, timings)}
    assert runs["openvino-int8"]["ratio_to_onnxruntime_fp32"] == 0.25
    assert runs["torch-fp32"]["ratio_to_onnxruntime_fp32"] == 4.0
    assert runs["openvino-int8"]["ratio_to_torch_eager"] == 0.0625


def test_report_names_the_graph_each_variant_runs_and_its_small_batch_graph():
    from ganrt.benchmarks.report import _graphs

    assert _graphs({"artifact": "onnx-fp32", "small_batch_graph": None}) == "`onnx-fp32`"
    assert _graphs({"artifact": "openvino-int8", "small_batch_graph": ["openvino-int8-small", 3]}) == \
        "`openvino-int8` (B<=3: `openvino-int8-small`)"


def test_probe_round_robin_ends_when_a_fast_runner_hits_max_calls_before_its_time(tool):
    """A runner that reaches max_calls short of its seconds is done (this once looped forever)."""
    import time

    import numpy as np

    time_round_robin = tool("cpu_fastpath_probe").time_round_robin

    t0 = time.perf_counter()
    times = time_round_robin({"fast": lambda z: None, "slow": lambda z: time.sleep(0.01)}, np.zeros(1),
                             seconds=0.05, block=0.01, min_calls=3, max_calls=20)
    assert len(times["fast"]) == 20 and 3 <= len(times["slow"]) < 20  # slow: done by time, fast: by count
    assert time.perf_counter() - t0 < 5.0
