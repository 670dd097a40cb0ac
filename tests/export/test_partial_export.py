"""Partial success is a result: what passed is written, what failed recorded, exit status 1 (--strict: nothing, 2).
A full disk is one line too (exit 2), naming where and about how much the export needs; the bundle stays as it was.
`ganrt inspect` lists every variant with where it was verified."""

from __future__ import annotations

import errno
import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")


def _run(*args):
    from ganrt.cli import cli

    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.fixture
def fp16_fails(monkeypatch):
    """fp16 held to a tolerance even identical images fail (the table of tolerances, as export reads it)."""
    from ganrt.export.verify import TOLERANCES, Tolerance

    monkeypatch.setitem(TOLERANCES, "fp16", Tolerance(max_abs_diff=-1))


def test_a_failing_precision_is_written_without_and_the_command_exits_1_with_a_table(tiny_checkpoint, tmp_path,
                                                                                    fp16_fails):
    out = tmp_path / "b"
    r = _run("export", tiny_checkpoint, "--out", out, "--precision", "fp32,fp16", "--max-batch", 4)
    assert r.exit_code == 1, r.output
    assert "partial export" in r.stderr and "not shipped: onnx-fp16" in r.stderr
    assert "onnxruntime-fp16" in r.stderr and "FAILED" in r.stderr and "onnxruntime-fp32" in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "onnx-fp16" not in manifest["artifacts"] and "onnx-fp16" in manifest["not_shipped"]
    assert manifest["variants"]["onnxruntime-fp32"]["passed"] is True
    assert not (out / "model.fp16.onnx").exists()

    r = _run("inspect", out)
    assert r.exit_code == 0, r.output
    assert "not shipped: onnx-fp16" in r.stdout and "onnxruntime-fp16" in r.stdout
    assert "variants verified at export" in r.stdout


def test_strict_writes_nothing_when_anything_fails(tiny_checkpoint, tmp_path, fp16_fails):
    out = tmp_path / "b"
    r = _run("export", tiny_checkpoint, "--out", out, "--precision", "fp32,fp16", "--max-batch", 4, "--strict")
    assert r.exit_code == 2 and not out.exists(), r.output
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("ganrt: error: strict export: nothing was written") and "onnx-fp16" in lines[-1]


def test_inspect_lists_every_variant_with_where_it_was_verified(tiny_checkpoint, tmp_path):
    from ganrt.runtime.machine import cpu_name

    out = tmp_path / "b"
    assert _run("export", tiny_checkpoint, "--out", out, "--max-batch", 4).exit_code == 0
    r = _run("inspect", out)
    here = r.stdout[r.stdout.index("runs here:"):]
    runnable = here.splitlines()[0].removeprefix("runs here: ").split(", ")
    assert {"onnxruntime-fp32", "onnxruntime-fp32-rw", "openvino-fp32"} <= set(runnable)
    for name in runnable:
        where = ("not verified at export: torch.compile compiles" if name.endswith("-compile") else
                 f"verified at export on {cpu_name()}, batch 1, 2, 4")
        assert f"  {name}: {where}" in here, (name, here)
    machine = json.loads(_run("inspect", out, "--json").stdout)["here"]
    assert machine["verified"]["onnxruntime-fp32"].startswith("verified at export on") and not machine["failed"]


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device", "/x/generator.safetensors"),
    RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                 'device" })'),  # safetensors' own words
], ids=["oserror", "safetensors"])
def test_a_full_disk_is_one_line_naming_where_and_how_much_and_the_bundle_stays(tiny_checkpoint, tmp_path,
                                                                               monkeypatch, error):
    from ganrt.bundle import Bundle
    from ganrt.export import torch_weights

    out = tmp_path / "b"
    assert _run("export", tiny_checkpoint, "--out", out, "--max-batch", 4).exit_code == 0
    before = Bundle.open(out)

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch_weights, "write_weights", full)
    r = _run("export", tiny_checkpoint, "--out", out, "--max-batch", 4, "--precision", "fp32,fp16")
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    where = "/x" if isinstance(error, OSError) else str(tmp_path)
    assert line.startswith(f"ganrt: error: no space left on the device of {where} while exporting: this export "
                           "needs about ") and "MiB" in line and f"{out} was left as it was" in line, line
    after = Bundle.open(out)
    assert after.manifest_sha256 == before.manifest_sha256 and "onnx-fp16" not in after.artifacts
    assert not list(tmp_path.glob(".b.export-*"))  # the staging directory is gone
