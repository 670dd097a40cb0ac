"""backend="auto": a pure function of the manifest and of what the machine has (runtime.selection.select)."""

from __future__ import annotations

import pytest

from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime import load
from ganrt.runtime.machine import Availability
from ganrt.runtime.selection import engine_target, select, trt_version_matches

CPU = "AMD EPYC 9999 (test)"
CPU_ONLY = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=False)
CPU_BF16 = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=True)
GPU = Availability(cpu=CPU, gpu="NVIDIA H100", sm="sm90", tensorrt="10.13.0.35",
                   ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                   openvino=True)


def manifest(*names, failed=(), benchmarks=None):
    """A manifest with the given artifacts (all parity-passed unless listed in ``failed``)."""
    artifacts = {"weights": {"file": "generator.safetensors", "kind": "weights", "precision": "fp32", "passed": None}}
    for name in names:
        if name.startswith("trt-"):
            _, precision, sm, trt = name.split("-", 3)
            artifacts[name] = {"file": f"engines/{precision}.{sm}.{trt}.plan", "kind": "engine",
                               "precision": precision, "passed": name not in failed}
        else:
            precision = name.split("-")[1]
            suffix = ".rw" if name.endswith("-rw") else ""
            artifacts[name] = {"file": f"model.{precision}{suffix}.onnx", "kind": "onnx", "precision": precision,
                               "passed": name not in failed}
    return {"artifacts": artifacts, "benchmarks": benchmarks or {}}


def bench(variants, cpu=CPU, gpu=None):
    return {"machine": {"cpu": cpu, "gpu": gpu}, "batch_size": 16,
            "variants": {name: {"backend": name.split("-")[0], "precision": name.split("-")[1], "median_ms": ms,
                                "passed": passed} for name, (ms, passed) in variants.items()}}


def test_auto_picks_onnxruntime_on_a_cpu_machine_without_benchmarks():
    choice = select(manifest("onnx-fp32", "onnx-fp16", "onnx-int8"), CPU_ONLY)
    assert (choice.variant, choice.artifact) == ("onnxruntime-fp32", "onnx-fp32")
    assert "default order" in choice.reason and "no benchmarks" in choice.reason


def test_auto_picks_onnxruntime_here_for_the_real_bundle(bundle_dir):
    with load(bundle_dir) as gen:  # this machine: no GPU, CPU without bf16
        assert gen.backend == "onnxruntime" and gen.variant == "onnxruntime-fp32"
        assert gen.provider == "CPUExecutionProvider"
        assert "default order" in gen.reason


def test_auto_follows_the_benchmarks_recorded_on_this_machine():
    b = bench({"onnxruntime-fp32": (0.9, True), "openvino-fp32": (0.5, True), "torch-fp32": (3.0, True)})
    choice = select(manifest("onnx-fp32", benchmarks=b), CPU_ONLY)
    assert choice.variant == "openvino-fp32"
    assert "benchmarks on this machine" in choice.reason and "0.5 ms" in choice.reason


def test_auto_follows_benchmarks_to_torch_compile():
    b = bench({"onnxruntime-fp32": (0.9, True), "torch-fp32-compile": (0.4, True)})
    choice = select(manifest("onnx-fp32", benchmarks=b), CPU_ONLY)
    assert choice.variant == "torch-fp32-compile" and choice.options == ("compile",)


def test_compile_under_auto_picks_a_torch_compile_variant_never_another_backend():
    """compile=True once failed with auto choosing another backend; it must not be dropped silently."""
    b = bench({"onnxruntime-fp32": (0.1, True), "openvino-fp32": (0.1, True), "torch-fp32-compile": (0.9, True)})
    for m in (manifest("onnx-fp32"), manifest("onnx-fp32", benchmarks=b)):
        choice = select(m, CPU_ONLY, compile=True)
        assert choice.backend == "torch" and "compile" in choice.options


def test_auto_ignores_benchmarks_from_another_machine():
    b = bench({"torch-fp32": (0.1, True)}, cpu="Some Other CPU")
    choice = select(manifest("onnx-fp32", benchmarks=b), CPU_ONLY)
    assert choice.variant == "onnxruntime-fp32" and "another machine" in choice.reason


def test_auto_never_picks_a_benchmarked_variant_that_failed_parity():
    b = bench({"onnxruntime-fp16": (0.2, False), "onnxruntime-fp32": (0.9, True)})
    choice = select(manifest("onnx-fp32", "onnx-fp16", benchmarks=b), CPU_ONLY)
    assert choice.variant == "onnxruntime-fp32"


def test_auto_never_picks_an_artifact_that_failed_parity():
    b = bench({"onnxruntime-fp32": (0.2, True), "torch-fp32": (3.0, True)})  # benchmark says passed, manifest not
    choice = select(manifest("onnx-fp32", failed=("onnx-fp32",), benchmarks=b), CPU_ONLY)
    assert choice.variant == "torch-fp32"
    failed_gpu = manifest("onnx-fp32", "trt-fp16-sm90-trt10.13", failed=("onnx-fp32", "trt-fp16-sm90-trt10.13"))
    assert select(failed_gpu, GPU).variant == "torch-fp32-cuda"


def test_explicit_backend_may_run_a_failed_artifact_with_a_warning():
    choice = select(manifest("onnx-fp32", failed=("onnx-fp32",)), CPU_ONLY, backend="onnxruntime")
    assert choice.variant == "onnxruntime-fp32" and "WARNING" in choice.reason


def test_openvino_bf16_only_on_a_bf16_cpu_with_a_passed_bf16_artifact():
    m = manifest("onnx-fp32", "onnx-bf16")
    assert select(m, CPU_BF16).variant == "openvino-bf16"
    assert select(m, CPU_ONLY).variant == "onnxruntime-fp32"  # no bf16 in this CPU
    assert select(manifest("onnx-fp32", "onnx-bf16", failed=("onnx-bf16",)), CPU_BF16).variant == "onnxruntime-fp32"
    assert select(manifest("onnx-fp32", "onnx-fp32-rw"), CPU_BF16).variant == "onnxruntime-fp32"  # no bf16 parity


def test_openvino_bf16_artifact_preference():
    assert select(manifest("onnx-fp32", "onnx-fp32-rw", "onnx-bf16"), CPU_BF16, backend="openvino",
                  precision="bf16").artifact == "onnx-bf16"
    assert select(manifest("onnx-fp32", "onnx-fp32-rw"), CPU_BF16, backend="openvino",
                  precision="bf16").artifact == "onnx-fp32-rw"
    assert select(manifest("onnx-fp32"), CPU_BF16, backend="openvino", precision="bf16").artifact == "onnx-fp32"
    # onnxruntime is slower on the rewritten graph: it takes the plain one
    assert select(manifest("onnx-fp32-rw", "onnx-fp32"), CPU_ONLY).artifact == "onnx-fp32"


def test_gpu_default_order_tensorrt_then_onnxruntime_cuda():
    m = manifest("onnx-fp32", "onnx-fp16", "trt-fp16-sm90-trt10.13", "trt-fp32-sm90-trt10.13")
    choice = select(m, GPU)
    assert (choice.variant, choice.device, choice.artifact) == ("tensorrt-fp16", "cuda", "trt-fp16-sm90-trt10.13")
    assert select(manifest("onnx-fp32", "onnx-fp16"), GPU).variant == "onnxruntime-fp16-cuda"
    assert select(manifest("onnx-fp32", "onnx-fp16"), GPU, device="cpu").variant == "onnxruntime-fp32"


def test_engine_for_another_gpu_or_tensorrt_is_never_chosen():
    m = manifest("onnx-fp32", "trt-fp16-sm89-trt10.13", "trt-fp32-sm90-trt10.9")
    assert select(m, GPU).variant == "onnxruntime-fp32-cuda"
    with pytest.raises(BackendUnavailable, match=r"built for sm89, this GPU \(NVIDIA H100\) is sm90"):
        select(m, GPU, backend="tensorrt", precision="fp16")
    with pytest.raises(BackendUnavailable, match="built with TensorRT 10.9, this machine has TensorRT 10.13"):
        select(m, GPU, backend="tensorrt", precision="fp32")


def test_tensorrt_on_a_machine_without_gpu():
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
        select(manifest("onnx-fp32", "trt-fp16-sm90-trt10.13"), CPU_ONLY, backend="tensorrt")


def test_missing_precision_lists_what_the_bundle_has():
    with pytest.raises(BundleError, match=r"no int8 artifact \(it has: fp16, fp32\)"):
        select(manifest("onnx-fp32", "onnx-fp16"), CPU_ONLY, precision="int8")


def test_int8_only_when_asked_for():
    m = manifest("onnx-fp32", "onnx-int8")
    assert select(m, CPU_ONLY).precision == "fp32"
    assert select(m, CPU_ONLY, precision="int8").variant == "onnxruntime-int8"


def test_engine_target_from_entry_or_file_name():
    assert engine_target("x", {"file": "engines/fp16.sm89.trt10.13.0.plan"}) == ("sm89", "10.13.0")
    assert engine_target("x", {"file": "e.plan", "sm": "86", "tensorrt": "11.0.1"}) == ("sm86", "11.0.1")
    assert trt_version_matches("10.13", "10.13.0.35") and not trt_version_matches("10.13", "10.14.0")
    assert not trt_version_matches(None, "10.13")


def test_explicit_torch_options_name_the_variant(bundle_dir):
    with load(bundle_dir, backend="torch", compile=True) as gen:  # compiled lazily: loading stays cheap
        assert gen.variant == "torch-fp32-compile" and gen.device == "cpu" and not gen.cuda_graphs
    with load(bundle_dir, backend="onnxruntime", threads=1) as gen:
        assert gen._runner.threads == 1 and gen.max_batch == 64


def with_records(m, **records):
    """``m`` with the variant records export writes ({variant: (artifact, passed)})."""
    m["variants"] = {v: {"artifact": a, "passed": p, "failures": [] if p else ["batch 2: KeyError 'x'"]}
                     for v, (a, p) in records.items()}
    return m


def test_a_variant_recorded_failed_is_never_auto_and_an_explicit_backend_prefers_one_that_passed():
    m = with_records(manifest("onnx-fp32", "onnx-fp32-rw", "onnx-bf16"),
                     **{"openvino-bf16": ("onnx-bf16", False), "openvino-fp32": ("onnx-fp32-rw", True)})
    assert select(m, CPU_BF16).variant == "onnxruntime-fp32"  # openvino-bf16 would be first in the default order
    choice = select(m, CPU_BF16, backend="openvino")
    assert choice.variant == "openvino-fp32" and "WARNING" not in choice.reason
    asked = select(m, CPU_BF16, variant="openvino-bf16")  # by name it still loads, saying why not to
    assert asked.variant == "openvino-bf16" and "WARNING" in asked.reason
    with pytest.raises(BackendUnavailable, match="failed parity or has none on record"):
        select(m, CPU_BF16, precision="bf16")


def test_a_record_of_another_artifact_does_not_decide_the_variant():
    """A record is of the artifact export ran: when the bundle now runs another for that variant, its own parity
    decides, not the record."""
    m = with_records(manifest("onnx-fp32", "onnx-fp32-rw"), **{"openvino-fp32": ("onnx-fp32", False)})
    assert select(m, CPU_ONLY, backend="openvino").passed is True  # runs onnx-fp32-rw, which passed
    m = with_records(manifest("onnx-fp32", "onnx-fp32-rw"), **{"openvino-fp32": ("onnx-fp32-rw", False)})
    choice = select(m, CPU_ONLY, backend="openvino")  # bf16 would run fp32 here: not a way around the failure
    assert choice.variant == "openvino-fp32" and choice.passed is False and "WARNING" in choice.reason


def test_a_variant_name_for_torch_is_refused_with_torchs_reason_not_tensorrts():
    m = manifest("onnx-fp32")
    m["spec"] = {"arch": "external", "latent_dim": 4, "channels": 1, "height": 8, "width": 8}
    with pytest.raises(BackendUnavailable) as e:
        select(m, CPU_ONLY, variant="torch-fp32")
    assert "its spec names no factory" in str(e.value) and "TensorRT" not in str(e.value)
    assert "failed parity" not in str(e.value)
