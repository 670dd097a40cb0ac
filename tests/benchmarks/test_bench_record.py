"""`ganrt bench` never writes the bundle's manifest: timings go to the tuning record of this machine, merged;
a gate is a verdict only; a concurrent re-export survives; a read-only bundle is benchmarked without a record."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from ganrt.cli import cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    from ganrt.export import ExportOptions, export_checkpoint

    path = tmp_path_factory.mktemp("record") / "b"
    export_checkpoint(tiny_checkpoint, path, options=ExportOptions(max_batch=4, verify_batch_cap=4))
    return path


@pytest.fixture
def bundle(exported, tmp_path):
    shutil.copytree(exported, tmp_path / "b")
    return tmp_path / "b"


def _bench(bundle, out, *extra):
    return CliRunner().invoke(cli, ["bench", str(bundle), "--out", str(out), "--batch-sizes", "1,2",
                                    "--duration", "0.1", "--min-runs", "3", "--warmup", "1", "--repeats", "1",
                                    "--parity-n", "4", "--threads", "1", "--variants", "onnxruntime-fp32",
                                    *extra])


def _snapshot(bundle):
    """Every file of the bundle but its tuning records, with its bytes."""
    return {p.relative_to(bundle): p.read_bytes() for p in sorted(bundle.rglob("*"))
            if p.is_file() and p.relative_to(bundle).parts[0] != "tuning"}


def test_bench_never_changes_the_manifest_or_an_artifact(bundle, tmp_path):
    """On main, every bench rewrote manifest.json: the bundle's sha256 (in PNGs and results.json) changed."""
    from ganrt.bundle import Bundle

    before, sha = _snapshot(bundle), Bundle.open(bundle).sha256()
    for i in range(2):
        result = _bench(bundle, tmp_path / f"o{i}")
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / f"o{i}" / "results.json").read_text())["bundle"]["sha256"] == sha
    assert _snapshot(bundle) == before and Bundle.open(bundle).sha256() == sha


def test_a_failing_gate_is_a_verdict_for_ci_and_auto_still_ranks_by_the_timings(bundle, tmp_path):
    """On main, a gate run recorded every variant as failed and auto then fell back to its default order."""
    from ganrt.runtime import load
    from ganrt.runtime.tuning import machine_key, read_tuning, tuning_table

    result = _bench(bundle, tmp_path / "o", "--gate", "psnr>=200,fd_ref<=-1")
    assert result.exit_code == 1 and "gate 'psnr>=200,fd_ref<=-1' failed for" in result.output
    table = tuning_table(read_tuning(bundle, machine_key(1)), json.loads((bundle / "manifest.json").read_text())
                         ["artifacts"])
    assert set(table) == {"onnxruntime-fp32", "torch-fp32"}
    fastest = min(table, key=lambda v: table[v][1])
    with load(bundle, threads=1) as gen:
        assert gen.variant == fastest and "this machine's tuning record" in gen.reason


def test_runs_add_to_the_record_per_variant_and_batch(bundle, tmp_path):
    """On main, a --variants run replaced the whole record."""
    from ganrt.runtime.tuning import machine_key, read_tuning

    assert _bench(bundle, tmp_path / "a").exit_code == 0
    result = CliRunner().invoke(cli, ["bench", str(bundle), "--out", str(tmp_path / "b"), "--batch-sizes", "4",
                                      "--duration", "0.1", "--min-runs", "3", "--warmup", "1", "--repeats", "1",
                                      "--parity-n", "4", "--threads", "1", "--variants", "onnxruntime-fp32-rw"])
    assert result.exit_code == 0, result.output
    variants = read_tuning(bundle, machine_key(1))["variants"]
    assert {n: sorted(v["by_batch"]) for n, v in variants.items()} == {
        "onnxruntime-fp32": ["1", "2", "4"], "torch-fp32": ["1", "2", "4"], "onnxruntime-fp32-rw": ["4"]}


def test_a_re_export_during_a_bench_is_not_overwritten(bundle, tmp_path, tiny_checkpoint, monkeypatch):
    """On main, a bench finishing after a concurrent export wrote its stale manifest over the new one."""
    import ganrt.benchmarks.parity as parity
    from ganrt.bundle import Bundle
    from ganrt.export import ExportOptions, export_checkpoint

    original = parity.fidelity

    def export_meanwhile(*args, **kwargs):
        export_checkpoint(tiny_checkpoint, bundle, options=ExportOptions(max_batch=2, verify_batch_cap=2))
        return original(*args, **kwargs)

    monkeypatch.setattr(parity, "fidelity", export_meanwhile)
    result = _bench(bundle, tmp_path / "o", "--batch-sizes", "1")
    assert result.exit_code == 0, result.output
    assert Bundle.open(bundle).graph["max_batch"] == 2  # the re-export's manifest, every hash matching


def test_a_read_only_bundle_is_benchmarked_without_a_record(bundle, tmp_path, monkeypatch):
    """On main, bench on a read-only bundle ended in a PermissionError traceback."""
    real_open, real_mkdir = os.open, os.mkdir
    inside = str(bundle) + os.sep

    def refuse(path) -> None:
        if os.path.abspath(path).startswith(inside):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir_(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    before = _snapshot(bundle)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir_)
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        result = _bench(bundle, tmp_path / "o")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert "cannot be written (Read-only file system): timings not recorded" in result.output
    assert (tmp_path / "o" / "results.json").is_file() and _snapshot(bundle) == before
    assert not (bundle / "tuning").exists()
