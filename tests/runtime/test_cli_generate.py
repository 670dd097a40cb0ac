"""`ganrt generate`: PNGs named by seed (and label) with provenance chunks, a grid, npz, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ganrt.cli import cli
from ganrt.fileio import sha256_file


def run(*args):
    result = CliRunner().invoke(cli, ["generate", *map(str, args)])
    return result


def test_pngs_carry_provenance_and_match_the_api(bundle_dir, tmp_path):
    out = tmp_path / "imgs"
    result = run(bundle_dir, "--seeds", "3-5", "--labels", "7", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["variant"] == "onnxruntime-fp32" and summary["n_images"] == 3
    names = sorted(p.name for p in out.iterdir())
    assert names == ["seed0003-label007.png", "seed0004-label007.png", "seed0005-label007.png"]
    png = Image.open(out / "seed0004-label007.png")
    text = png.text
    assert text["seed"] == "4" and text["label"] == "7" and text["truncation"] == ""
    assert text["bundle_sha256"] == sha256_file(bundle_dir / "manifest.json")
    assert text["variant"] == "onnxruntime-fp32"
    assert "generated" in text["generated"]

    from ganrt.runtime import load

    with load(bundle_dir, backend="onnxruntime") as gen:
        expected = gen.generate(seeds=[4], labels=7)[0, :, :, 0]
    np.testing.assert_array_equal(np.asarray(png), expected)


def test_grid_with_one_row_per_label(bundle_dir, tmp_path):
    grid = tmp_path / "grid.png"
    result = run(bundle_dir, "--seeds", "0-3", "--labels", "0-2", "--grid", grid, "--no-files", "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert "backend: torch-fp32" in result.stderr and "wrote 12 image(s)" in result.stdout
    img = Image.open(grid)
    pad = 2
    assert img.size == (4 * (32 + pad) + pad, 3 * (32 + pad) + pad)  # 4 seeds across, 3 labels down
    assert img.text["variant"] == "torch-fp32"


def test_random_labels_by_default_and_npz_output(bundle_dir, tmp_path):
    from ganrt.latents import labels_from_seeds

    result = run(bundle_dir, "--seeds", "0,9,20", "--format", "npz", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "images.npz") as data:  # no pickles: allow_pickle stays False
        assert data["images"].shape == (3, 32, 32, 1) and data["images"].dtype == np.uint8
        assert data["seeds"].tolist() == [0, 9, 20]
        assert data["labels"].tolist() == labels_from_seeds([0, 9, 20], 10).tolist()
        assert str(data["variant"]) == "onnxruntime-fp32"


@pytest.mark.parametrize("args, message", [
    (["--labels", "12"], "--labels 12 is out of range: this generator has 10 classes"),
    (["--labels", "cat"], "cannot read --labels 'cat'"),
    (["--seeds", "9-3"], "cannot read seeds '9-3'"),
    (["--precision", "int8"], "no int8 artifact"),
    (["--backend", "tensorrt"], "no TensorRT engine"),
    (["--no-files"], "--no-files writes nothing without --grid"),
])
def test_bad_options_exit_2_with_one_line(bundle_dir, tmp_path, args, message):
    result = run(bundle_dir, "--out", tmp_path / "x", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_truncation_for_a_family_without_it(bundle_dir, tmp_path):
    result = run(bundle_dir, "--truncation", "0.7", "--out", tmp_path)
    assert result.exit_code == 2 and "has no truncation" in result.stderr


@pytest.mark.parametrize("fmt", ["npz", "png"])
def test_the_largest_seeds_work_in_every_format(bundle_dir, tmp_path, fmt):
    """On main, --seeds 9223372036854775808 --format npz generated, then ended in an OverflowError traceback."""
    top = 2**64 - 1
    out = tmp_path / fmt
    result = run(bundle_dir, "--seeds", f"{2**63},{top}", "--labels", "1", "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    from ganrt.runtime import load

    with load(bundle_dir, backend="onnxruntime") as gen:
        expected = gen.generate(seeds=[2**63, top], labels=1)
    if fmt == "npz":
        data = np.load(out / "images.npz")
        assert data["seeds"].dtype == np.uint64 and [int(s) for s in data["seeds"]] == [2**63, top]
        np.testing.assert_array_equal(data["images"], expected)
    else:
        png = Image.open(out / f"seed{top}-label001.png")
        assert png.text["seed"] == str(top)
        np.testing.assert_array_equal(np.asarray(png), expected[1, :, :, 0])


@pytest.mark.parametrize("seeds, message", [
    ("18446744073709551616", "seeds must be integers in [0, 2**64 - 1]"),  # 2**64
    ("0-9999999999", "are 10000000000 seeds; at most 1000000 per call"),  # on main: a MemoryError traceback
    ("0-999999", "1000000 images of 1x32x32 need 1.0 GiB; at most 524288 per call"),
    ("0-199999 --labels 0-9", "200000 seeds x 10 labels are 2000000 images; at most 1000000 per call"),
])
def test_too_many_or_too_large_seeds_are_refused_before_any_work(bundle_dir, tmp_path, seeds, message, monkeypatch):
    import ganrt.runtime.cli as generate_cli

    monkeypatch.setattr(generate_cli, "MAX_IMAGE_BYTES", 512 << 20)  # the budget check without 4 GiB of images
    monkeypatch.setattr("ganrt.runtime.load", lambda *a, **k: pytest.fail("loaded a backend"))
    result = run(bundle_dir, "--seeds", *seeds.split(), "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "o").exists()
