"""Selection with the CPU fast path's artifacts: onnx-fp32-rw, onnx-bf16 (OpenVINO's bf16 hint) and the
openvino-int8 IR (pure: manifests and Availability made here)."""

from __future__ import annotations

import pytest

from ganrt.errors import BackendUnavailable
from ganrt.runtime.machine import Availability
from ganrt.runtime.selection import select

CPU = "AMD EPYC 9999 (test)"
NO_BF16 = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=False)
BF16 = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=True)
NO_OPENVINO = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",))


def fast_path_manifest(*, failed=(), benchmarks=None, rewritten=True):
    """What `ganrt export --precision fp32,bf16 --openvino-int8` writes (every entry passed unless in ``failed``)."""
    a = {"weights": {"file": "generator.safetensors", "kind": "weights", "precision": "fp32", "passed": None},
         "onnx-fp32": {"file": "model.fp32.onnx", "kind": "onnx", "precision": "fp32", "rewritten": False},
         "onnx-bf16": {"file": "model.bf16.onnx", "kind": "onnx", "precision": "bf16", "rewritten": True,
                       "runtime": "openvino", "inference_hint": "bf16", "bf16_hardware": False},
         "openvino-int8": {"file": "openvino/model.int8.xml", "kind": "openvino-ir", "precision": "int8",
                           "rewritten": True, "runtime": "openvino"},
         "openvino-int8-bin": {"file": "openvino/model.int8.bin", "kind": "other", "precision": None}}
    if rewritten:
        a["onnx-fp32-rw"] = {"file": "model.fp32.rw.onnx", "kind": "onnx", "precision": "fp32", "rewritten": True}
    for name, entry in a.items():
        if entry["kind"] != "weights" and entry["precision"]:
            entry["passed"] = name not in failed
    return {"artifacts": a, "benchmarks": benchmarks or {}}


def bench(variants, cpu=CPU):
    return {"machine": {"cpu": cpu, "gpu": None}, "batch_size": 1,
            "variants": {n: {"backend": n.split("-")[0], "precision": n.split("-")[1], "median_ms": ms, "passed": ok}
                         for n, (ms, ok) in variants.items()}}


FASTEST_INT8 = {"onnxruntime-fp32": (1.0, True), "onnxruntime-fp32-rw": (0.75, True), "openvino-fp32": (0.7, True),
                "openvino-int8": (0.25, True), "torch-fp32": (3.0, True)}


def test_without_benchmarks_a_cpu_without_bf16_runs_onnxruntime_fp32():
    choice = select(fast_path_manifest(), NO_BF16)
    assert (choice.variant, choice.artifact) == ("onnxruntime-fp32", "onnx-fp32")


def test_without_benchmarks_a_bf16_cpu_runs_the_bf16_graph_on_openvino():
    choice = select(fast_path_manifest(), BF16)
    assert (choice.variant, choice.artifact) == ("openvino-bf16", "onnx-bf16")


def test_auto_takes_openvino_int8_when_the_benchmarks_say_it_is_fastest_and_passed():
    choice = select(fast_path_manifest(benchmarks=bench(FASTEST_INT8)), NO_BF16)
    assert (choice.variant, choice.artifact) == ("openvino-int8", "openvino-int8")
    assert "0.25 ms" in choice.reason


def test_auto_never_takes_openvino_int8_whose_benchmark_parity_failed():
    variants = {**FASTEST_INT8, "openvino-int8": (0.25, False)}
    choice = select(fast_path_manifest(benchmarks=bench(variants)), NO_BF16)
    assert (choice.variant, choice.artifact) == ("openvino-fp32", "onnx-fp32-rw")


def test_auto_never_takes_openvino_int8_whose_export_parity_failed():
    choice = select(fast_path_manifest(failed=("openvino-int8",), benchmarks=bench(FASTEST_INT8)), NO_BF16)
    assert choice.variant == "openvino-fp32"


def test_benchmarks_of_another_machine_do_not_bring_int8():
    choice = select(fast_path_manifest(benchmarks=bench(FASTEST_INT8, cpu="another CPU")), NO_BF16)
    assert choice.variant == "onnxruntime-fp32" and "another machine" in choice.reason


def test_benchmarked_bf16_is_not_taken_on_a_cpu_without_bf16():
    variants = {**FASTEST_INT8, "openvino-int8": (0.25, False), "openvino-bf16": (0.1, True)}
    choice = select(fast_path_manifest(benchmarks=bench(variants)), NO_BF16)
    assert choice.variant == "openvino-fp32"


def test_onnxruntime_fp32_rw_is_a_variant_of_its_own():
    choice = select(fast_path_manifest(benchmarks=bench({**FASTEST_INT8, "openvino-int8": (0.25, False),
                                                         "openvino-fp32": (0.9, True)})), NO_BF16)
    assert (choice.variant, choice.artifact, choice.options) == ("onnxruntime-fp32-rw", "onnx-fp32-rw", ("rw",))
    asked = select(fast_path_manifest(), NO_BF16, variant="onnxruntime-fp32-rw")
    assert asked.artifact == "onnx-fp32-rw" and "asked for" in asked.reason


@pytest.mark.parametrize(("precision", "artifact"), [("fp32", "onnx-fp32-rw"), ("bf16", "onnx-bf16"),
                                                     ("int8", "openvino-int8")])
def test_openvino_runs_the_fast_path_artifact_of_each_precision(precision, artifact):
    assert select(fast_path_manifest(), NO_BF16, backend="openvino", precision=precision).artifact == artifact


def test_openvino_fp32_without_a_rewritten_graph_runs_the_plain_one():
    assert select(fast_path_manifest(rewritten=False), NO_BF16, backend="openvino").artifact == "onnx-fp32"


def test_the_bf16_graph_made_for_openvino_is_not_offered_to_onnxruntime():
    with pytest.raises(BackendUnavailable, match="cannot run onnxruntime at bf16"):
        select(fast_path_manifest(), NO_BF16, backend="onnxruntime", precision="bf16")


def test_openvino_int8_without_openvino_says_so():
    with pytest.raises(BackendUnavailable, match="OpenVINO is not installed"):
        select(fast_path_manifest(), NO_OPENVINO, backend="openvino", precision="int8")


def test_an_unknown_variant_name_lists_what_can_run():
    with pytest.raises(BackendUnavailable, match="cannot run openvino-fp16.*onnxruntime-fp32-rw"):
        select(fast_path_manifest(), NO_BF16, variant="openvino-fp16")
