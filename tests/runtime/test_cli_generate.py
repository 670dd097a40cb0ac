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
