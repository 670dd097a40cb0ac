"""A tiny real bench run: results.json schema, report files, tuning record, gate failing, CLI errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ganrt.cli import cli


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_checkpoint, write_bundle):
    """A weights-only bundle (the torch reference) plus, when export works here, its fp32 ONNX graph."""
    path = tmp_path_factory.mktemp("bundle") / "b"
    try:
        from ganrt.export import ExportOptions, export_checkpoint

        export_checkpoint(tiny_checkpoint, path, options=ExportOptions(precisions=("fp32",), max_batch=4))
    except ImportError:
        from ganrt.bundle import WEIGHTS
        from ganrt.checkpoint import read_checkpoint

        write_bundle(path, read_checkpoint(tiny_checkpoint).spec,
                     {"weights": (tiny_checkpoint.read_bytes(), {"file": WEIGHTS, "kind": "weights",
                                                                 "precision": "fp32"})}, graph={"max_batch": 4})
    return path


def _bench(bundle, out, *extra):
    return CliRunner().invoke(cli, ["bench", str(bundle), "--out", str(out), "--batch-sizes", "1,2",
                                    "--duration", "0.2", "--min-runs", "3", "--warmup", "1", "--repeats", "2",
                                    "--parity-n", "8", "--threads", "1", *extra], catch_exceptions=False)


@pytest.fixture(scope="module")
def bench_run(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = _bench(tiny_bundle, out, "--variants", "torch-fp32,onnxruntime-fp32,no-such-variant")
    return out, result


def test_bench_writes_a_valid_results_file(bench_run):
    from ganrt.benchmarks.report import validate_results

    out, result = bench_run
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    runs = [r for r in results["runs"] if "latency_ms" in r]
    assert {(r["variant"], r["batch_size"]) for r in runs} >= {("torch-fp32", 1), ("torch-fp32", 2)}
    for r in runs:
        assert r["n_runs"] >= 3 and len(r["raw_ms"]) == r["n_runs"]
        assert r["images_per_s"] == pytest.approx(r["batch_size"] * 1e3 / r["latency_ms"]["median"])
        assert r["ratio_to_best"] >= 1.0
    eager = [r for r in runs if r["variant"] == "torch-fp32"]
    assert all(r["ratio_to_torch_eager"] == pytest.approx(1.0) for r in eager)
    assert results["parity"]["torch-fp32"]["psnr_db"] == "inf"  # identical to the reference
    assert results["skipped"]["no-such-variant"]
    env = results["environment"]
    assert env["python"] and env["versions"]["torch"] and "flags" in env["cpu"] and "machine" in env


def test_bench_writes_report_plots_and_sample_grids(bench_run):
    out, _ = bench_run
    report = (out / "report.md").read_text()
    for heading in ("## Latency", "## Throughput", "## Ratios", "## Parity"):
        assert heading in report
    assert "`torch-fp32`" in report
    for name in ("latency.png", "throughput.png", "samples/torch-fp32.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_records_its_timings_in_the_tuning_record_of_this_machine(bench_run, tiny_bundle):
    from ganrt.bundle import Bundle
    from ganrt.runtime.tuning import machine_key, read_tuning

    out, result = bench_run
    results = json.loads((out / "results.json").read_text())
    assert results["tuning_record"]["1"].endswith(f"tuning/{machine_key(1)}.json")  # --threads 1 is in the key
    record = read_tuning(tiny_bundle, machine_key(1))
    assert record["machine"]["threads"] == 1 and record["machine"]["versions"]["torch"]
    bundle = Bundle.open(tiny_bundle)
    for name, v in record["variants"].items():
        timed = {str(r["batch_size"]): r["latency_ms"]["median"] for r in results["runs"]
                 if r["variant"] == name and "latency_ms" in r}
        assert {b: row["median_ms"] for b, row in v["by_batch"].items()} == pytest.approx(timed)
        assert set(timed) == {"1", "2"}
        assert v["artifact_sha256"] == bundle.artifacts[v["artifact"]]["sha256"]
        assert "passed" not in v  # a bench verdict is not the bundle's business
    assert read_tuning(tiny_bundle, machine_key(2)) == {}  # another thread count: another record


def test_an_impossible_gate_fails_the_run(tiny_bundle, tmp_path):
    result = _bench(tiny_bundle, tmp_path, "--variants", "torch-fp32", "--gate", "fd_ref<=-1", "--no-record")
    assert result.exit_code == 1
    assert "gate 'fd_ref<=-1' failed for: torch-fp32" in result.output
    parity = json.loads((tmp_path / "results.json").read_text())["parity"]
    assert parity["torch-fp32"]["passed"] is False


def test_bench_cli_errors_exit_2(tiny_bundle, tmp_path):
    bad_gate = _bench(tiny_bundle, tmp_path, "--gate", "psnr=>40")
    assert bad_gate.exit_code == 2 and "cannot read gate clause" in bad_gate.output
    bad_sizes = _bench(tiny_bundle, tmp_path, "--batch-sizes", "1,999")
    assert bad_sizes.exit_code == 2 and "exceeds the bundle's max_batch" in bad_sizes.output
    no_bundle = CliRunner().invoke(cli, ["bench", str(tmp_path), "--out", str(tmp_path / "o")])
    assert no_bundle.exit_code == 2 and "no manifest.json" in no_bundle.output


def test_eval_cli_reports_labelled_metrics_and_errors(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("GANRT_CACHE_DIR", str(tmp_path / "cache"))
    ok = CliRunner().invoke(cli, ["eval", str(tiny_checkpoint), "--dataset", "mnist", "--extractor", "pixels",
                                  "--n", "20", "--kid-subsets", "3", "--json"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    result = json.loads(ok.output)
    assert "FD-pixels" in result["metrics"] and "FID" not in result["metrics"]
    missing = CliRunner().invoke(cli, ["eval", str(tiny_checkpoint), "--extractor", "domain"])
    assert missing.exit_code == 2 and "needs a classifier file" in missing.output
    monkeypatch.delenv("GANRT_INCEPTION_WEIGHTS", raising=False)
    no_weights = CliRunner().invoke(cli, ["eval", str(tiny_checkpoint), "--extractor", "inception"])
    assert no_weights.exit_code == 2 and "pt_inception-2015-12-05" in no_weights.output
