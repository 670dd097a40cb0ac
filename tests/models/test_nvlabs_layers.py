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


def _stylegan3_spec(name="stylegan3-r-cond-32"):
    from pathlib import Path

    from ganrt.importers.nvlabs import read

    return read(Path(__file__).parents[1] / "importers" / "data" / f"{name}.pkl")


@pytest.mark.parametrize("name", ["stylegan3-t-32", "stylegan3-r-cond-32"])
def test_stylegan3_is_built_from_the_snapshots_geometry_and_filters(name):
    """Layer geometry comes from the snapshot's layer objects, filters from its tensors: a build from the spec
    alone allocates every tensor the snapshot fills, of the same shape (radial 2-D low-pass filters in R)."""
    from ganrt.models import build_generator

    imported = _stylegan3_spec(name)
    layers = imported.spec.arch_kwargs["synthesis"]["layers"]
    assert [f"L{i}_" for i in range(len(layers))] == [d["name"][: len(f"L{i}_")] for i, d in enumerate(layers)]
    fresh = build_generator(imported.spec).state_dict()
    loaded = imported.module.state_dict()
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in loaded.items()}
    filters = [k for k in loaded if k.endswith(("up_filter", "down_filter"))]
    assert filters and any(loaded[k].ndim == 2 for k in filters) == ("-r-" in name)
    assert all(float(loaded[k].abs().sum()) > 0 for k in filters)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s["layers"][3].update(in_channels=s["layers"][3]["in_channels"] + 1), r"takes \d+x\d+, L2_"),
    (lambda s: s["layers"][-1].update(is_torgb=False), "must be ToRGB"),
    (lambda s: s["layers"][0].update(padding=[1, 2, 3]), r"padding is \[1, 2, 3\]"),
    (lambda s: s["input"].update(size=s["input"]["size"] + 2), "the input gives"),
    (lambda s: s.pop("layers"), "take \\['input', 'layers', 'output_scale'\\]"),
])
def test_a_stylegan3_spec_whose_layers_do_not_fit_is_refused_naming_what(edit, message):
    import copy

    from ganrt.models import build_generator
    from ganrt.spec import GeneratorSpec

    spec = _stylegan3_spec().spec
    kwargs = copy.deepcopy(spec.arch_kwargs)
    edit(kwargs["synthesis"])
    with pytest.raises(ValueError, match=message):
        build_generator(GeneratorSpec.from_dict({**spec.to_dict(), "arch_kwargs": kwargs}))
