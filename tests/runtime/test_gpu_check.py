"""`make gpu-check` skips cleanly without a GPU; the GPU code paths run (and are checked) where one exists."""

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
