"""`make gpu-check` skips cleanly without a GPU, fails on any backend error, parity failure or missing engine,
lists what it skipped and why, and its one-line GPU command is rehearsed on the CPU; the GPU code paths run
(and are checked) where one exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
def test_gpu_check_exits_0_with_a_message_without_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gpu-check: skipped: no CUDA GPU is visible" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
def test_gpu_check_with_require_gpu_exits_2_without_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--require-gpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU is visible" in proc.stdout


def _raising(error):
    def load(*args, **kwargs):
        raise error
    return load


def test_only_not_available_here_is_a_skip_every_other_error_fails(tool, monkeypatch, bundle_dir):
    import ganrt.runtime
    from ganrt.errors import BackendError, BackendUnavailable, BundleError

    gc = tool("gpu_check")
    ref = np.zeros((16, 32, 32, 1), np.uint8)
    monkeypatch.setattr(ganrt.runtime, "load", _raising(BackendUnavailable("no engine for this GPU (sm80)")))
    row = gc.check_variant(bundle_dir, "tensorrt-fp16", ref, [1], 1)
    assert row == {"variant": "tensorrt-fp16", "skipped": "no engine for this GPU (sm80)"}
    for error in (BackendError("tensorrt-fp16 failed on a batch of 1: execute_async_v3 failed"),
                  BundleError("engine returned float32 images"), RuntimeError("CUDA error: illegal address")):
        monkeypatch.setattr(ganrt.runtime, "load", _raising(error))
        row = gc.check_variant(bundle_dir, "tensorrt-fp16", ref, [1], 1)
        assert row["passed"] is False and type(error).__name__ in row["error"], row
    rows = [{"variant": "a", "passed": True}, {"variant": "b", "skipped": "tensorrt is not installed"},
            {"variant": "c", "error": "BackendError: x", "passed": False}]
    assert gc._finish(rows, None, [], None) == 1
    assert gc._finish(rows[:2], None, [], None) == 0
    assert "1 passed, 1 failed, 1 skipped" in gc.summary(rows) and "skipped b: tensorrt is not installed" in \
        gc.summary(rows)


def test_a_failed_engine_build_is_a_failed_row_and_the_rest_is_still_checked(tool, monkeypatch, tmp_path):
    import ganrt.export
    from ganrt.errors import ExportError

    gc = tool("gpu_check")
    calls = []

    def export_checkpoint(ckpt, out, options, progress):
        calls.append(options)
        if options.tensorrt:
            raise ExportError("TensorRT cannot parse model.fp16.onnx: Transpose: UINT8 unsupported")
        (out / "manifest.json").parent.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(ganrt.export, "export_checkpoint", export_checkpoint)
    bundle, rows = gc.small_bundle(tmp_path, engines=True, max_batch=8, log=lambda m: None)
    assert [o.tensorrt for o in calls] == [True, False]
    assert rows[0]["passed"] is False and "TensorRT cannot parse" in rows[0]["error"]


def test_a_missing_engine_is_a_failed_row_when_tensorrt_is_here(tool):
    from ganrt.runtime.machine import Availability

    gc = tool("gpu_check")
    manifest = {"spec": {}, "artifacts": {
        "onnx-fp32": {"kind": "onnx", "precision": "fp32"}, "onnx-fp16": {"kind": "onnx", "precision": "fp16"},
        "onnx-fp32-rw": {"kind": "onnx", "precision": "fp32", "rewritten": True},
        "trt-fp32-sm90-trt10.13.0.35": {"kind": "engine", "precision": "fp32", "sm": "90", "tensorrt": "10.13.0.35",
                                        "file": "engines/fp32.sm90.trt10.13.0.35.plan", "passed": True}}}
    rows = gc.engine_rows(manifest, Availability(gpu="H100", sm="sm90", tensorrt="10.13.0.35"))
    assert [r["variant"] for r in rows] == ["tensorrt-fp16"] and rows[0]["passed"] is False
    assert gc.engine_rows(manifest, Availability(gpu="H100", sm="sm90")) == []  # no TensorRT: none expected
    elsewhere = gc.engine_rows(manifest, Availability(gpu="A100", sm="sm80", tensorrt="10.13.0.35"))
    assert {r["variant"] for r in elsewhere} == {"tensorrt-fp32", "tensorrt-fp16"}
    assert "built for sm90" in next(r for r in elsewhere if r["variant"] == "tensorrt-fp32")["error"]


def test_the_budget_skips_and_lists_what_it_has_no_time_for(tool, monkeypatch, bundle_dir, tmp_path):
    gc = tool("gpu_check")
    monkeypatch.setattr(gc, "small_bundle", lambda work, **kw: (bundle_dir, []))
    monkeypatch.setattr(gc, "image_coverage", lambda: {"imported": [], "carried": [], "lacking": []})  # the suite's
    assert gc.main(["--dry-run", "--budget-min", "0.01", "--batches", "1", "--report", str(tmp_path)]) == 0
    import json

    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert rows and all("out of time" in r["skipped"] for r in rows if r["variant"] != "GPU image packages")
    assert "skipped onnxruntime-fp32: out of time" in (tmp_path / "report.md").read_text()


def test_the_dry_run_fails_when_the_gpu_image_would_lack_a_package(tool, tmp_path):
    gc = tool("gpu_check")
    for name in ("gpu_image_packages.txt", "gpu_wheels.txt"):
        text = (ROOT / "tools" / name).read_text()
        (tmp_path / name).write_text(text.replace("onnxslim==0.1.98", ""))
    run = ["torch", "onnx", "onnxslim", "jsonschema", "rpds", "pydot"]  # pydot: imported, but ganrt needs it not
    assert gc.image_coverage(modules=run)["lacking"] == []
    assert gc.image_coverage(tmp_path, modules=run)["lacking"] == ["onnxslim"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the real command")
def test_the_one_line_gpu_command_rehearses_on_the_cpu(tmp_path):
    """The README's one-line command, with --dry-run: ganrt installed with --no-index into a fresh folder and
    imported from there, the export, the plan of CUDA variants, the checks on the CPU variants, the report,
    and every package the run needs either on the GPU image or among the carried wheels."""
    import json
    import os
    import shutil

    readme = (ROOT / "README.md").read_text()
    assert "\nsh tools/gpu_oneshot.sh\n" in readme
    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "GANRT_WHEELS": str(tmp_path / "no-wheels-here")}
    proc = subprocess.run(["sh", "tools/gpu_oneshot.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["dry_run"] is True and result["image"]["lacking"] == []
    assert not result["ganrt_from"].startswith(str(ROOT)), "ganrt must run from the --no-index install"
    assert {"torch-fp16-cuda", "torch-fp16-cuda-cl", "torch-fp16-cuda-cudagraph",
            "torch-fp16-cuda-compile"} <= set(result["planned"])
    rows = result["results"]
    assert rows and all(r.get("passed") is True for r in rows), rows
    assert {"onnxruntime-fp32", "torch-fp32"} <= {r["variant"] for r in rows}
    assert "DRY RUN" in (tmp_path / "out" / "report.md").read_text()


def test_cuda_requests_fail_clearly_without_gpu(bundle_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from ganrt.errors import BackendUnavailable
    from ganrt.runtime import load

    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
        load(bundle_dir, device="cuda")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision, cuda_graphs, limit", [("fp32", False, 2), ("fp32", True, 2),
                                                          ("fp16", False, 8), ("fp16", True, 8)])
def test_torch_cuda_matches_cpu_reference(bundle_dir, precision, cuda_graphs, limit):
    from ganrt.runtime import load

    seeds, labels = list(range(7)), [s % 10 for s in range(7)]
    with load(bundle_dir, backend="torch", device="cpu") as ref_gen:
        ref = ref_gen.generate(seeds=seeds, labels=labels)
    with load(bundle_dir, backend="torch", device="cuda", precision=precision, cuda_graphs=cuda_graphs) as gen:
        for _ in range(2):  # the second call replays the captured graph
            images = gen.generate(seeds=seeds, labels=labels)
            assert np.abs(images.astype(int) - ref).max() <= limit


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_onnxruntime_cuda_matches_cpu(bundle_dir, cuda_graphs):
    from ganrt.runtime import load
    from ganrt.runtime.machine import onnxruntime_providers

    if "CUDAExecutionProvider" not in onnxruntime_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    seeds, labels = list(range(7)), [s % 10 for s in range(7)]
    with load(bundle_dir, backend="onnxruntime", device="cpu") as cpu:
        ref = cpu.generate(seeds=seeds, labels=labels)
    with load(bundle_dir, backend="onnxruntime", device="cuda", cuda_graphs=cuda_graphs) as gen:
        for batch in (7, 3, 7):  # two sizes: two graphs, then a replay
            images = gen.generate(seeds=seeds[:batch], labels=labels[:batch])
            assert np.abs(images.astype(int) - ref[:batch]).max() <= 2


@pytest.mark.tensorrt
@needs_cuda
def test_tensorrt_engine_matches_reference(tmp_path, contrast_checkpoint):
    pytest.importorskip("tensorrt")
    from ganrt.export import ExportOptions, export_checkpoint
    from ganrt.runtime import load

    bundle = tmp_path / "b"
    export_checkpoint(contrast_checkpoint, bundle,
                      options=ExportOptions(precisions=("fp32",), tensorrt=True, max_batch=16))
    seeds, labels = list(range(5)), [1] * 5
    with load(bundle, backend="torch", device="cpu") as ref_gen:
        ref = ref_gen.generate(seeds=seeds, labels=labels)
    for graphs in (False, True):
        with load(bundle, backend="tensorrt", cuda_graphs=graphs) as gen:
            assert gen.backend == "tensorrt"
            for _ in range(2):
                assert np.abs(gen.generate(seeds=seeds, labels=labels).astype(int) - ref).max() <= 2
