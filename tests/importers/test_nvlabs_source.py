"""`--verify-against-source CHECKOUT --trust-code`: NVlabs' forward pass from a checkout, in its own process.

CI has no NVlabs code: the checkout here is the stand-in in ``nvlabs_standin/`` (see its README), whose
``Generator`` replays the images NVlabs' code drew for the test snapshot. The real comparison (NVlabs' own
checkout) is run by hand and its figures are in the README.
"""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from ganrt.cli import cli

pytest.importorskip("torch")


def _run(nv, name, tmp_path, monkeypatch, *extra, offset: float = 0.0):
    monkeypatch.setenv("GANRT_STANDIN_IMAGES", str(nv.DATA / f"{name}.nvlabs-images.npz"))
    monkeypatch.setenv("GANRT_STANDIN_OFFSET", str(offset))
    out = tmp_path / "g.safetensors"
    args = ["import", "nvlabs", str(nv.snapshot_path(name)), "--out", str(out), "--verify-against-source",
            str(nv.STANDIN), "--trust-code", *extra]
    return CliRunner().invoke(cli, args), out


@pytest.mark.parametrize("name", ["stylegan3-r-cond-32", "stylegan2-64"])
def test_parity_against_the_checkouts_forward_pass_is_reported_and_recorded(name, nv, tmp_path, monkeypatch):
    from ganrt.checkpoint import read_metadata

    result, out = _run(nv, name, tmp_path, monkeypatch, "--json")
    assert result.exit_code == 0, result.output
    parity = json.loads(result.output)["parity"]
    assert parity["passed"] is True and parity["max_levels"] <= 1
    assert parity["reference"] == "nvlabs" and parity["noise_mode"] == "const" and parity["seeds"] == list(range(8))
    assert sorted(parity["per_truncation"]) == ["0.5", "0.7", "1"]
    # the stand-in replays uint8 images (clamped, rounded): ganrt's float output differs in output units
    assert parity["max_abs_diff"] > 0
    # NVlabs' modules came from the checkout, in another process: none of it is loaded here
    assert all(f.startswith(str(nv.STANDIN)) for f in parity["nvlabs_modules"].values())
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert read_metadata(out)["extra"]["imported_from"]["parity"] == parity


def test_a_difference_from_nvlabs_fails_the_import_and_writes_nothing(nv, tmp_path, monkeypatch):
    result, out = _run(nv, "stylegan3-t-32", tmp_path, monkeypatch, offset=0.05)  # ~6 levels
    assert result.exit_code == 2 and not out.exists()
    line = result.output.strip()
    assert line.startswith("ganrt: error: ") and "\n" not in line and "levels" in line
    result, out = _run(nv, "stylegan3-t-32", tmp_path, monkeypatch, "--allow-failed-parity", "--json", offset=0.05)
    assert result.exit_code == 0, result.output
    parity = json.loads(result.output)["parity"]
    assert parity["passed"] is False and 5 <= parity["max_levels"] <= 8


def test_the_text_report_names_each_truncation(nv, tmp_path, monkeypatch):
    result, _ = _run(nv, "stylegan2-ada-cond-32", tmp_path, monkeypatch, "--seeds", "0-3", "--truncations", "0.7")
    assert result.exit_code == 0, result.output
    assert "parity against NVlabs' forward pass" in result.output and "psi  0.7" in result.output
    assert "passed" in result.output


def test_a_folder_that_is_no_checkout_is_refused(nv, tmp_path):
    args = ["import", "nvlabs", str(nv.snapshot_path("stylegan3-t-32")), "--out", str(tmp_path / "g.safetensors"),
            "--verify-against-source", str(tmp_path), "--trust-code"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "not a checkout of NVlabs'" in result.output


def test_code_that_fails_in_the_checkout_gives_one_line(nv, tmp_path, monkeypatch):
    monkeypatch.delenv("GANRT_STANDIN_IMAGES", raising=False)  # the stand-in's forward pass cannot run
    args = ["import", "nvlabs", str(nv.snapshot_path("stylegan3-t-32")), "--out", str(tmp_path / "g.safetensors"),
            "--verify-against-source", str(nv.STANDIN), "--trust-code"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "running NVlabs' code from" in result.output and "KeyError" in result.output
    assert not (tmp_path / "g.safetensors").exists()
