"""The building blocks of ganrt's NVlabs StyleGAN2/StyleGAN3 reproductions, against independent references."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
scipy_signal = pytest.importorskip("scipy.signal")

from ganrt.models.nvlabs_layers import upfirdn2d  # noqa: E402


def _reference_upfirdn2d(x: np.ndarray, f: np.ndarray, up: int, down: int, pad, gain: float) -> np.ndarray:
    """The definition, step by step in numpy/scipy: zero insertion, pad or crop, 2-D convolution, decimation."""
    left, right, top, bottom = pad
    f2 = np.outer(f, f) if f.ndim == 1 else f
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    u = np.pad(u, ((0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))))
    u = u[:, :, max(-top, 0):u.shape[2] - max(-bottom, 0), max(-left, 0):u.shape[3] - max(-right, 0)]
    out = np.stack([np.stack([scipy_signal.convolve2d(u[i, j], f2 * gain, mode="valid") for j in range(c)])
                    for i in range(b)])
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up, down, pad, taps, separable", [
    (1, 1, (1, 1, 1, 1), 4, False),
    (2, 1, (2, 1, 2, 1), 4, False),  # StyleGAN2's ToRGB upsampling
    (1, 2, (0, 0, 0, 0), 12, True),  # StyleGAN3's downsampling
    (2, 1, (9, 8, 9, 8), 12, True),  # a StyleGAN3-T layer's upsampling
    (4, 1, (-6, -9, -6, -9), 24, True),  # upsampling by 4 with a crop
    (2, 1, (-11, -12, 3, 0), 12, True),  # unequal pads and crops
    (2, 2, (3, 2, 1, 4), 5, True),  # up and down in one call, an odd filter
    (1, 2, (1, 2, 2, 1), 6, False),  # a 2-D (non-separable) filter with decimation
])
def test_upfirdn2d_matches_its_definition(up, down, pad, taps, separable):
    rng = np.random.default_rng(taps * 10 + up)
    x = rng.standard_normal((2, 3, 25, 27))
    f = rng.standard_normal(taps) if separable else rng.standard_normal((taps, taps))
    gain = float(up * up)
    expected = _reference_upfirdn2d(x, f, up, down, pad, gain)
    got = upfirdn2d(torch.from_numpy(x).float(), torch.from_numpy(f).float(), up=up, down=down, padding=pad,
                    gain=gain).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_upfirdn2d_without_a_filter_only_pads_and_decimates():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    y = upfirdn2d(x, None, padding=(1, -1, 0, 0))
    assert y.shape == (2, 1, 4, 4)
    torch.testing.assert_close(y[:, :, :, 1:], x[:, :, :, :3])
    assert float(y[:, :, :, 0].abs().sum()) == 0.0


def test_stylegan3_layer_plan_matches_nvlabs_published_layer_names():
    """The names (index, grid size, channels) of NVlabs' published StyleGAN3 networks follow from the paper's
    formulas: configs T at 1024 and 256, and R at 1024 (doubled channels)."""
    from ganrt.models.stylegan3_nvlabs import SYNTHESIS_DEFAULTS, plan_layers

    def names(res, **kw):
        return [p.name for p in plan_layers(res, 3, **{**SYNTHESIS_DEFAULTS, **kw})[1]]

    assert names(1024) == ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512",
                           "L6_148_512", "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51",
                           "L12_1044_32", "L13_1024_32", "L14_1024_3"]
    assert names(256) == ["L0_36_512", "L1_36_512", "L2_36_512", "L3_52_512", "L4_52_512", "L5_84_512",
                          "L6_84_512", "L7_148_512", "L8_148_512", "L9_148_362", "L10_276_256", "L11_276_181",
                          "L12_276_128", "L13_256_128", "L14_256_3"]
    assert names(1024, conv_kernel=1, channel_base=65536, channel_max=1024, use_radial_filters=True)[:3] == [
        "L0_36_1024", "L1_36_1024", "L2_52_1024"]


@pytest.mark.parametrize("name", ["stylegan3-t-32", "stylegan3-r-cond-32"])
def test_stylegan3_filters_designed_here_equal_the_snapshots(name):
    """A fresh build designs the same up/down filters (Kaiser sinc; jinc for R) NVlabs stored in the snapshot."""
    from pathlib import Path

    from ganrt.importers.nvlabs import read
    from ganrt.models import build_generator

    imported = read(Path(__file__).parents[1] / "importers" / "data" / f"{name}.pkl")
    fresh = build_generator(imported.spec).state_dict()
    loaded = imported.module.state_dict()
    filters = [k for k in loaded if k.endswith(("up_filter", "down_filter"))]
    assert filters and any(loaded[k].ndim == 2 for k in filters) == ("-r-" in name)
    for k in filters:
        torch.testing.assert_close(fresh[k], loaded[k], rtol=1e-6, atol=1e-7)
