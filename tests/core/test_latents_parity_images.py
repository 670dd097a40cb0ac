import numpy as np
import pytest

from ganrt.errors import InputError
from ganrt.images import make_grid, save_png
from ganrt.latents import labels_from_seeds, latents_from_seeds, parse_seed_range
from ganrt.parity import image_parity, json_safe


def test_latents_follow_the_documented_pcg64_mapping():
    z = latents_from_seeds([0, 5], 8)
    assert z.dtype == np.float32 and z.shape == (2, 8)
    expect = np.random.Generator(np.random.PCG64(5)).standard_normal(8).astype(np.float32)
    assert np.array_equal(z[1], expect)
    # a seed's latent does not depend on its neighbours in the request
    assert np.array_equal(latents_from_seeds([5], 8)[0], z[1])


def test_labels_come_from_their_own_stream():
    labels = labels_from_seeds(range(200), 10)
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() <= 9
    assert len(set(labels.tolist())) == 10


@pytest.mark.parametrize("text,expect", [("0-3", [0, 1, 2, 3]), ("1,5,9", [1, 5, 9]), ("0-1,7", [0, 1, 7])])
def test_seed_ranges(text, expect):
    assert parse_seed_range(text) == expect


@pytest.mark.parametrize("text", ["", "a-b", "5-2", "-3"])
def test_bad_seed_ranges_are_input_errors(text):
    with pytest.raises(InputError):
        parse_seed_range(text)


def test_parity_figures():
    ref = np.zeros((2, 4, 4, 1), np.uint8)
    var = ref.copy()
    var[0, 0, 0, 0] = 3
    p = image_parity(ref, var)
    assert p["max_abs_diff"] == 3.0
    assert p["frac_gt_1"] == pytest.approx(1 / 32)
    assert p["psnr_db"] == pytest.approx(10 * np.log10(255**2 / (9 / 32)))
    assert image_parity(ref, ref)["psnr_db"] == float("inf")
    assert json_safe({"a": [float("inf")]}) == {"a": ["inf"]}


def test_grid_and_png_metadata(tmp_path):
    from PIL import Image

    imgs = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    grid = make_grid(imgs, nrow=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert np.array_equal(grid[1:5, 1:5], imgs[0])
    path = save_png(tmp_path / "g.png", grid, text={"seed": "3", "generated": "true"})
    with Image.open(path) as im:
        assert im.text["seed"] == "3"


def test_seeds_span_uint64_and_stop_there():
    from ganrt.latents import latents_from_seeds

    top = 2**64 - 1
    assert parse_seed_range(f"{top - 1}-{top}") == [top - 1, top]
    z = latents_from_seeds([top], 4)
    np.testing.assert_array_equal(z[0], np.random.Generator(np.random.PCG64(top)).standard_normal(4).astype(np.float32))
    with pytest.raises(InputError, match=r"up to 2\*\*64 - 1"):
        latents_from_seeds([2**64], 4)
    with pytest.raises(InputError, match=r"at most 10 per call"):
        parse_seed_range("0-10", max_count=10)
