"""The GPU fast path on torch alone: fp16/bf16 weights shipped with their own parity, run by the torch CUDA
variants (eager, channels_last, CUDA graphs, torch.compile), which auto can then rank. On CPU: the export,
the manifest and the selection logic; the CUDA runs themselves are `make gpu-check`'s."""

from __future__ import annotations

import pytest

from ganrt.runtime.machine import Availability
from ganrt.runtime.selection import runnable, select

GPU = Availability(cpu="test CPU", gpu="NVIDIA H200", sm="sm90", ort_providers=("CPUExecutionProvider",))


@pytest.fixture(scope="module")
def torch_bundle(tmp_path_factory, contrast_checkpoint):
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("tw") / "bundle"
    return export_checkpoint(contrast_checkpoint, out, options=ExportOptions(
        max_batch=8, verify_batch_cap=4, cpu_rewrite=False, torch_precisions=("fp16", "bf16"))).bundle


def test_export_ships_half_size_weights_with_their_parity(torch_bundle):
    b = torch_bundle
    fp32 = b.artifact_path("weights").stat().st_size
    for p in ("fp16", "bf16"):
        entry = b.artifacts[f"weights-{p}"]
        assert entry["kind"] == "weights" and entry["precision"] == p and entry["passed"] is True
        assert entry["made_by"]["verified_on"] == "cpu" and entry["parity"]["psnr_db"] > 30
        assert b.artifact_path(f"weights-{p}").stat().st_size < 0.6 * fp32


def test_the_torch_cuda_forms_of_each_precision_are_variants_auto_can_rank(torch_bundle):
    manifest = torch_bundle.to_dict()
    names = {c.variant: c for c in runnable(manifest, GPU).choices if c.backend == "torch"}
    for p in ("fp32", "fp16", "bf16"):
        for form in ("", "-cl", "-cudagraph", "-cl-cudagraph", "-compile"):
            assert f"torch-{p}-cuda{form}" in names
    assert names["torch-fp16-cuda-cl"].artifact == "weights-fp16" and names["torch-fp16-cuda-cl"].passed is True
    assert names["torch-fp16-cuda"].auto is True  # parity on record: auto may rank it
    tuning = {"variants": {"torch-bf16-cuda-cl-cudagraph": {
        "artifact": "weights-bf16", "artifact_sha256": torch_bundle.artifacts["weights-bf16"]["sha256"],
        "by_batch": {"8": {"median_ms": 0.1}}},
        "torch-fp32-cuda": {"artifact": "weights", "artifact_sha256": torch_bundle.artifacts["weights"]["sha256"],
                            "by_batch": {"8": {"median_ms": 0.5}}}}}
    choice = select(manifest, GPU, tuning=tuning, batch_size=8)
    assert choice.variant == "torch-bf16-cuda-cl-cudagraph" and choice.artifact == "weights-bf16"
    # without benchmarks the default order keeps plain eager (no channels_last, graphs or compile)
    assert select(manifest, GPU, backend="torch", precision="fp16").variant == "torch-fp16-cuda"


def test_without_shipped_weights_a_cast_precision_is_taken_only_when_asked(bundle_dir):
    from ganrt.bundle import Bundle

    manifest = Bundle.open(bundle_dir).to_dict()
    cast = {c.variant: c for c in runnable(manifest, GPU).choices}["torch-fp16-cuda"]
    assert cast.artifact == "weights" and cast.passed is None and cast.auto == "asked"


def test_unknown_torch_weight_precisions_are_refused(tiny_checkpoint, tmp_path):
    from ganrt.errors import ConfigError
    from ganrt.export import ExportOptions, export_checkpoint

    with pytest.raises(ConfigError, match="torch weights can be shipped in fp16, bf16, not 'int8'"):
        export_checkpoint(tiny_checkpoint, tmp_path / "b", options=ExportOptions(torch_precisions=("int8",)))
