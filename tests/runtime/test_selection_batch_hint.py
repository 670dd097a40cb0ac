"""backend="auto" with a batch-size hint: variants ranked by the benchmark measured at the batch closest to it
(pure selection tests, plus load() and `ganrt generate` on the real tiny bundle)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ganrt.cli import cli
from ganrt.errors import ConfigError
from ganrt.runtime import load
from ganrt.runtime.machine import Availability, describe_machine
from ganrt.runtime.selection import batches_by_closeness, benchmark_table, select

CPU = "AMD EPYC 9999 (test)"
NO_BF16 = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",), openvino=True, openvino_bf16=False)


def manifest(variants, *, failed_export=(), cpu=CPU):
    """CPU fast-path artifacts (all passed unless in ``failed_export``) and a benchmarks section recorded by
    `ganrt bench` with per-batch medians: variants = {name: ({batch: ms}, passed)}."""
    artifacts = {
        "weights": {"file": "generator.safetensors", "kind": "weights", "precision": "fp32", "passed": None},
        "onnx-fp32": {"file": "model.fp32.onnx", "kind": "onnx", "precision": "fp32"},
        "onnx-fp32-rw": {"file": "model.fp32.rw.onnx", "kind": "onnx", "precision": "fp32", "rewritten": True},
        "openvino-int8": {"file": "openvino/model.int8.xml", "kind": "openvino-ir", "precision": "int8",
                          "runtime": "openvino"},
    }
    for name, entry in artifacts.items():
        if name != "weights":
            entry["passed"] = name not in failed_export
    smallest = min(b for by_batch, _ in variants.values() for b in by_batch)
    bench = {"machine": {"cpu": cpu, "gpu": None}, "batch_size": smallest,
             "variants": {n: {"backend": n.split("-")[0], "precision": n.split("-")[1],
                              "median_ms": by_batch.get(smallest),
                              "median_ms_by_batch": {str(b): ms for b, ms in by_batch.items()}, "passed": ok}
                          for n, (by_batch, ok) in variants.items()}}
    return {"artifacts": artifacts, "benchmarks": bench}


# A wins at batch 1 (onnxruntime fp32), B wins at 8 and 64 (OpenVINO int8: 0.19x onnxruntime at 64)
A, B = "onnxruntime-fp32", "openvino-int8"
A_AT_1_B_AT_64 = {A: ({1: 1.0, 8: 6.0, 64: 50.0}, True), B: ({1: 1.4, 8: 2.0, 64: 9.5}, True),
                  "torch-fp32": ({1: 3.0, 8: 20.0, 64: 160.0}, True)}


@pytest.mark.parametrize(("hint", "expected", "batch"), [(1, A, 1), (64, B, 64), (40, B, 64), (None, A, 1),
                                                         (2, A, 1), (8, B, 8), (1000, B, 64)])
def test_auto_ranks_by_the_benchmark_at_the_batch_closest_to_the_hint(hint, expected, batch):
    choice = select(manifest(A_AT_1_B_AT_64), NO_BF16, batch_size=hint)
    assert choice.variant == expected
    assert f"at batch {batch};" in choice.reason
    assert ("no batch-size hint" in choice.reason) == (hint is None)
    if hint is not None:
        assert f"batch-size hint {hint}" in choice.reason


def test_ties_in_distance_go_to_the_smaller_measured_batch():
    table = benchmark_table(manifest(A_AT_1_B_AT_64)["benchmarks"])
    assert batches_by_closeness(table, 36) == [8, 64, 1]  # 36-8 == 64-36: the smaller batch first
    assert batches_by_closeness(table, None) == [1, 8, 64]
    assert select(manifest({A: ({4: 1.0, 8: 5.0}, True), B: ({4: 2.0, 8: 3.0}, True)}), NO_BF16,
                  batch_size=6).variant == A  # 6 is as close to 4 as to 8: batch 4 decides


@pytest.mark.parametrize("hint", [None, 1, 40, 64])
def test_a_variant_failing_parity_is_never_chosen_at_any_batch(hint):
    in_bench = {**A_AT_1_B_AT_64, B: (A_AT_1_B_AT_64[B][0], False)}
    assert select(manifest(in_bench), NO_BF16, batch_size=hint).variant == A
    in_export = manifest(A_AT_1_B_AT_64, failed_export=("openvino-int8",))
    assert select(in_export, NO_BF16, batch_size=hint).variant == A


def test_a_failed_variant_leaves_the_decision_to_the_others_at_that_batch():
    variants = {**A_AT_1_B_AT_64, A: (A_AT_1_B_AT_64[A][0], False)}
    choice = select(manifest(variants), NO_BF16, batch_size=1)
    assert choice.variant == B and "at batch 1;" in choice.reason  # B is second fastest at batch 1


def test_the_next_closest_batch_decides_when_nothing_measured_at_the_closest_can_run():
    variants = {A: ({1: 1.0}, True), B: ({1: 1.4, 64: 9.5}, True)}
    no_openvino = Availability(cpu=CPU, ort_providers=("CPUExecutionProvider",))
    choice = select(manifest(variants), no_openvino, batch_size=64)
    assert choice.variant == A and "at batch 1;" in choice.reason


def test_manifests_without_per_batch_medians_rank_by_median_ms_at_their_batch():
    m = manifest({A: ({1: 1.0}, True), B: ({1: 0.5}, True)})
    for v in m["benchmarks"]["variants"].values():
        del v["median_ms_by_batch"]
    for hint in (None, 1, 64):
        choice = select(m, NO_BF16, batch_size=hint)
        assert choice.variant == B and "0.5 ms median at batch 1;" in choice.reason


def test_the_hint_is_ignored_by_explicit_backends_and_benchmarks_of_another_machine():
    assert select(manifest(A_AT_1_B_AT_64), NO_BF16, backend="onnxruntime", batch_size=64).variant == A
    other = select(manifest(A_AT_1_B_AT_64, cpu="another CPU"), NO_BF16, batch_size=64)
    assert other.variant == A and "another machine" in other.reason


@pytest.mark.parametrize("hint", [0, -3, 2.5, "8", True])
def test_a_bad_hint_is_a_clear_error(hint):
    with pytest.raises(ConfigError, match="batch-size hint must be an integer >= 1"):
        select(manifest(A_AT_1_B_AT_64), NO_BF16, batch_size=hint)


# -- on the real tiny bundle: onnxruntime-fp32 fastest at batch 1, torch-fp32 at batch 64 --------------------
def _bench_here(manifest_dict):
    manifest_dict["benchmarks"] = {
        "machine": describe_machine(), "batch_size": 1,
        "variants": {"onnxruntime-fp32": {"backend": "onnxruntime", "precision": "fp32", "median_ms": 1.0,
                                          "median_ms_by_batch": {"1": 1.0, "64": 30.0}, "passed": True},
                     "torch-fp32": {"backend": "torch", "precision": "fp32", "median_ms": 2.0,
                                    "median_ms_by_batch": {"1": 2.0, "64": 20.0}, "passed": True}}}


def test_load_passes_the_hint_to_auto(edit_bundle):
    path = edit_bundle(_bench_here)
    with load(path) as gen:
        assert gen.variant == "onnxruntime-fp32" and "at batch 1;" in gen.reason
    with load(path, batch_size=50) as gen:
        assert gen.variant == "torch-fp32" and "at batch 64;" in gen.reason
    with pytest.raises(ConfigError, match="batch-size hint"):
        load(path, batch_size=0)


def test_generate_hints_the_number_of_images_or_the_given_hint(edit_bundle, tmp_path):
    path = edit_bundle(_bench_here)

    def variant(*args):
        result = CliRunner().invoke(cli, ["generate", str(path), "--format", "npz", "--out", str(tmp_path),
                                          "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert variant("--seeds", "0-1")["variant"] == "onnxruntime-fp32"  # 2 images: batch 1 is closest
    big = variant("--seeds", "0-99")  # 100 images, capped at max_batch 64
    assert big["variant"] == "torch-fp32" and "batch-size hint 64" in big["reason"]
    assert variant("--seeds", "0-1", "--batch-size-hint", "40")["variant"] == "torch-fp32"
    result = CliRunner().invoke(cli, ["generate", str(path), "--batch-size-hint", "0"])
    assert result.exit_code == 2 and "--batch-size-hint" in result.output
