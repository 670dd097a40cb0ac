"""Tuning records: the machine key, merge per (variant, batch), atomic and locked writes, stale rows ignored,
and backend auto ranking the variants that passed export parity by them."""

from __future__ import annotations

import json
import threading

import pytest

from ganrt.errors import BundleError, ConfigError
from ganrt.runtime.machine import Availability
from ganrt.runtime.selection import select
from ganrt.runtime.tuning import (
    KEY_PATTERN,
    key_of,
    machine_identity,
    machine_key,
    read_tuning,
    record_tuning,
    tuning_path,
    tuning_table,
)

SHA_A, SHA_B = "a" * 64, "b" * 64
CPU = Availability(cpu="Test CPU", ort_providers=("CPUExecutionProvider",), openvino=True)


def row(variant, batch, ms, artifact="onnx-fp32", sha=SHA_A):
    return {"variant": variant, "batch_size": batch, "median_ms": ms, "backend": variant.split("-")[0],
            "precision": "fp32", "artifact": artifact, "artifact_sha256": sha}


def test_the_machine_key_covers_threads_hardware_and_versions():
    one, two = machine_identity(1), machine_identity(2)
    assert one["threads"] == 1 and one["versions"]["torch"] and one["cpu"]
    assert machine_key(1) == key_of(one) == machine_key(1) != machine_key(2) == key_of(two)
    assert KEY_PATTERN.match(machine_key(1)) and "-t1-" in machine_key(1)
    assert key_of({**one, "versions": {**one["versions"], "onnxruntime": "0.0.1"}}) != key_of(one)
    assert key_of({**one, "gpu": "NVIDIA H100"}).split("-t1-")[0].endswith("nvidia-h100")
    with pytest.raises(ConfigError, match="threads must be an integer >= 1"):
        machine_key(0)


def test_records_merge_per_variant_and_batch(tmp_path):
    record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 1, 2.0), row("onnxruntime-fp32", 8, 9.0),
                                  row("torch-fp32", 1, 5.0, "weights")])
    record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 1, 1.5), row("openvino-fp32", 1, 1.0, "onnx-fp32-rw")])
    record = read_tuning(tmp_path, "k")
    by_batch = {n: {b: r["median_ms"] for b, r in v["by_batch"].items()} for n, v in record["variants"].items()}
    assert by_batch == {"onnxruntime-fp32": {"1": 1.5, "8": 9.0}, "torch-fp32": {"1": 5.0},
                        "openvino-fp32": {"1": 1.0}}
    assert not list(tmp_path.glob("tuning/.*"))  # no temporary or lock file left


def test_a_rebuilt_artifact_starts_its_timings_afresh_and_stale_rows_are_not_used(tmp_path):
    record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 1, 2.0), row("onnxruntime-fp32", 8, 9.0)])
    record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 1, 3.0, sha=SHA_B)])
    record = read_tuning(tmp_path, "k")
    assert list(record["variants"]["onnxruntime-fp32"]["by_batch"]) == ["1"]
    assert tuning_table(record, {"onnx-fp32": {"sha256": SHA_B}}) == {"onnxruntime-fp32": {1: 3.0}}
    assert tuning_table(record, {"onnx-fp32": {"sha256": SHA_A}}) == {}  # measured on another build
    assert tuning_table(record, {}) == {}  # the artifact is gone


def test_concurrent_writers_all_land(tmp_path):
    threads = [threading.Thread(target=record_tuning, args=(tmp_path, "k", [row(f"v{i}-fp32", 1, 1.0 + i)]))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(read_tuning(tmp_path, "k")["variants"]) == [f"v{i}-fp32" for i in range(8)]


def test_a_malformed_record_is_ignored_with_a_warning_and_replaced(tmp_path):
    path = tuning_path(tmp_path, "k")
    path.parent.mkdir()
    path.write_text(json.dumps({"format": "ganrt.tuning", "format_version": 1, "variants": {"x": []}}))
    with pytest.warns(RuntimeWarning, match=r"variants\.x: \[\] is not of type 'object'"):
        assert read_tuning(tmp_path, "k") == {}
    with pytest.warns(RuntimeWarning, match="replacing the tuning record"):
        record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 1, 1.0)])
    assert list(read_tuning(tmp_path, "k")["variants"]) == ["onnxruntime-fp32"]


@pytest.mark.parametrize("key", ["../escape", "UPPER", "a/b", ""])
def test_keys_are_file_names_only(tmp_path, key):
    with pytest.raises(ConfigError, match="tuning key"):
        read_tuning(tmp_path, key)


def test_rows_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"tuning rows: 0\.batch_size: 0 is less than the minimum of 1"):
        record_tuning(tmp_path, "k", [row("onnxruntime-fp32", 0, 1.0)])


def manifest(failed=()):
    artifacts = {"weights": {"file": "generator.safetensors", "kind": "weights", "precision": "fp32",
                             "sha256": "c" * 64},
                 "onnx-fp32": {"file": "model.fp32.onnx", "kind": "onnx", "precision": "fp32", "sha256": SHA_A},
                 "onnx-fp32-rw": {"file": "model.fp32.rw.onnx", "kind": "onnx", "precision": "fp32", "sha256": SHA_B,
                                  "rewritten": True}}
    for name, a in artifacts.items():
        if name != "weights":
            a["passed"] = name not in failed
    return {"spec": {"arch": "dcgan"}, "artifacts": artifacts}


def record(**ms):
    rows = [row("onnxruntime-fp32", 1, ms["ort"]), row("onnxruntime-fp32-rw", 1, ms["rw"], "onnx-fp32-rw", SHA_B),
            row("torch-fp32", 1, ms["torch"], "weights", "c" * 64)]
    variants = {r["variant"]: {"artifact": r["artifact"], "artifact_sha256": r["artifact_sha256"],
                               "by_batch": {"1": {"median_ms": r["median_ms"]}}} for r in rows}
    return {"format": "ganrt.tuning", "format_version": 1, "variants": variants}


def test_auto_ranks_by_this_machines_tuning_record():
    choice = select(manifest(), CPU, tuning=record(ort=2.0, rw=1.0, torch=3.0))
    assert choice.variant == "onnxruntime-fp32-rw" and "this machine's tuning record" in choice.reason
    assert select(manifest(), CPU, tuning=record(ort=2.0, rw=4.0, torch=1.0)).variant == "torch-fp32"


def test_auto_never_takes_a_variant_whose_export_parity_failed_however_fast():
    choice = select(manifest(failed=("onnx-fp32-rw",)), CPU, tuning=record(ort=2.0, rw=1.0, torch=3.0))
    assert choice.variant == "onnxruntime-fp32"


def test_the_tuning_record_comes_before_an_old_manifests_benchmarks():
    m = manifest()
    m["benchmarks"] = {"machine": {"cpu": "Test CPU", "gpu": None}, "batch_size": 1,
                       "variants": {"torch-fp32": {"median_ms": 0.1, "passed": True}}}
    assert select(m, CPU).variant == "torch-fp32"  # bundles benched before tuning records still work
    assert select(m, CPU, tuning=record(ort=2.0, rw=1.0, torch=3.0)).variant == "onnxruntime-fp32-rw"


def test_a_tuning_folder_linked_out_of_the_bundle_is_never_written_and_read_as_empty(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "tuning").symlink_to(outside)
    with pytest.raises(BundleError, match="tuning record 'tuning/k.json' leads outside the bundle"):
        record_tuning(bundle, "k", [row("onnxruntime-fp32", 1, 1.0)])
    assert list(outside.iterdir()) == []
    (outside / "k.json").write_text("{}")
    with pytest.warns(RuntimeWarning, match="leads outside the bundle"):
        assert read_tuning(bundle, "k") == {}
