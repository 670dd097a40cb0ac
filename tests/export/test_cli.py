"""`ganrt export` and `ganrt inspect`: the bundle they write and show; one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")


def _run(*args):
    from ganrt.cli import cli

    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_export_checkpoint_then_inspect(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    r = _run("export", tiny_checkpoint, "--out", out, "--precision", "fp32", "--max-batch", 4, "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    assert manifest["artifacts"]["onnx-fp32"]["passed"] is True and manifest["graph"]["max_batch"] == 4

    r = _run("inspect", out)
    assert r.exit_code == 0, r.output
    sha = manifest["artifacts"]["onnx-fp32"]["sha256"][:12]
    assert "onnx-fp32" in r.stdout and sha in r.stdout and "passed" in r.stdout
    assert "input  z" in r.stdout and "output images" in r.stdout and "['batch', 32, 32, 1]" in r.stdout
    r = _run("inspect", out, "--json")
    assert json.loads(r.stdout)["artifacts"].keys() == manifest["artifacts"].keys()


def test_export_users_model_by_import_path(user_package, tmp_path):
    out = tmp_path / "b"
    r = _run("export", "--model", user_package, "--latent-dim", 12, "--image-shape", "3x16x16", "--num-classes", 5,
             "--out", out, "--max-batch", 2)
    assert r.exit_code == 0, r.output
    assert "onnx-fp32" in r.stdout and "exporting to ONNX" in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["factory"] == user_package and manifest["source"]["factory"] == user_package


@pytest.mark.parametrize("args, message", [
    (["export", "--out", "{tmp}/b"], "give either a CHECKPOINT or --model"),
    (["export", "--model", "json:loads", "--out", "{tmp}/b"], "--model needs --latent-dim and --image-shape"),
    (["export", "--model", "json:loads", "--latent-dim", "4", "--image-shape", "3by8", "--out", "{tmp}/b"],
     "--image-shape must look like CxHxW"),
    (["export", "--model", "no_such_pkg_xyz:make", "--latent-dim", "4", "--image-shape", "1x8x8", "--out",
      "{tmp}/b"], "cannot import 'no_such_pkg_xyz'"),
    (["inspect", "{tmp}/nothing"], "does not exist or is not a directory"),
])
def test_errors_are_one_line_with_exit_status_2(args, message, tmp_path):
    r = _run(*(a.format(tmp=tmp_path) for a in args))
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganrt: error: ") and message in lines[0]


def test_bad_precision_and_tampered_bundle_exit_2(tiny_checkpoint, tmp_path):
    r = _run("export", tiny_checkpoint, "--out", tmp_path / "b", "--precision", "fp32,fp4")
    assert r.exit_code == 2 and "--precision takes a comma-separated list" in r.stderr
    assert _run("export", tiny_checkpoint, "--out", tmp_path / "b", "--max-batch", 2).exit_code == 0
    (tmp_path / "b" / "model.fp32.onnx").write_bytes(b"not a graph")
    r = _run("inspect", tmp_path / "b")
    assert r.exit_code == 2 and "does not match its recorded sha256" in r.stderr


def test_every_option_is_documented():
    from ganrt.export.cli import export, inspect

    for command in (export, inspect):
        for p in command.params:
            if p.param_type_name == "option":
                assert p.help, f"{command.name} {p.opts} has no help"


def test_inspect_notes_name_the_small_batch_graph_and_its_main_graph():
    from ganrt.export.cli import _small_batch_note

    assert _small_batch_note({"small_batch_graph": {"artifact": "openvino-int8-small", "max_batch": 3}}) == \
        "batches <= 3 run openvino-int8-small"
    assert _small_batch_note({"small_batch_of": "openvino-int8"}) == \
        "small-batch graph of openvino-int8 (the same images)"
    assert _small_batch_note({"kind": "onnx"}) == ""
