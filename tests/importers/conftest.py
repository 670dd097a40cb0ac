"""NVlabs snapshots for the importer tests, and what NVlabs' own code draws from them.

How the files in ``data/`` were made (once, outside this repository, from checkouts of NVlabs' stylegan3
and stylegan2-ada-pytorch; no NVlabs code is in this repository):

- Each generator was built with NVlabs' own classes and keyword arguments as their ``train.py`` sets them
  (``training.networks.Generator`` of stylegan2-ada-pytorch; ``networks_stylegan2.Generator`` and
  ``networks_stylegan3.Generator`` configs T and R of stylegan3), at tiny widths and 32x32 or 64x64, with
  random weights: NVlabs' initialisation, zero-initialised parameters (biases, noise strengths) drawn at
  random, StyleGAN2's ToRGB weights scaled by 0.25 (so few pixels saturate), a few forward passes with
  ``update_emas`` to track ``w_avg`` and StyleGAN3's input magnitudes. G is G_ema plus noise; a tiny D
  and an AugmentPipe complete the snapshot.
- Before pickling, the module source NVlabs embeds in each network object was replaced by a placeholder
  (a comment); the snapshot was then written as NVlabs' training loop writes it:
  ``pickle.dump(dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, training_set_kwargs=...))``.
- ``<name>.nvlabs-images.npz`` holds what NVlabs' forward pass drew, on the CPU, before pickling:
  ``G_ema(z, c, truncation_psi=psi, noise_mode='const', force_fp32=True)`` for seeds 0-7 (z from
  ganrt.latents, labels from ganrt.latents.labels_from_seeds as one-hot c) and psi 0.5, 0.7 and 1.0,
  converted to uint8 NHWC by ganrt.postprocess.ToUint8NHWC: ``seeds``, ``labels``, ``truncation``,
  ``images`` (psi, seed, H, W, C).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
STANDIN = Path(__file__).parent / "nvlabs_standin"
# name -> (family, NVlabs config, classes, resolution)
SNAPSHOTS = {
    "stylegan2-ada-cond-32": ("stylegan2_nvlabs", "StyleGAN2", 4, 32),
    "stylegan2-64": ("stylegan2_nvlabs", "StyleGAN2", 0, 64),
    "stylegan3-t-32": ("stylegan3_nvlabs", "StyleGAN3-T", 0, 32),
    "stylegan3-r-cond-32": ("stylegan3_nvlabs", "StyleGAN3-R", 3, 32),
}


def snapshot_path(name: str) -> Path:
    return DATA / f"{name}.pkl"


def stored_images(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.nvlabs-images.npz") as f:
        return {k: f[k] for k in f.files}


@contextlib.contextmanager
def standin_on_path():
    """The stand-in checkout importable as torch_utils / dnnlib, then forgotten again."""
    sys.path.insert(0, str(STANDIN))
    try:
        yield
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib")]:
            del sys.modules[name]


def rewrite_snapshot(name: str, out: Path, edit) -> Path:
    """Load snapshot ``name`` the NVlabs way (the stand-in), ``edit(data)``, pickle it again to ``out``."""
    with standin_on_path():
        with open(snapshot_path(name), "rb") as f:
            data = pickle.load(f)
        edit(data)
        out.write_bytes(pickle.dumps(data))
    return out


def max_levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


class NVlabsKit:
    DATA = DATA
    STANDIN = STANDIN
    SNAPSHOTS = SNAPSHOTS
    snapshot_path = staticmethod(snapshot_path)
    stored_images = staticmethod(stored_images)
    standin_on_path = staticmethod(standin_on_path)
    rewrite_snapshot = staticmethod(rewrite_snapshot)
    max_levels = staticmethod(max_levels)


@pytest.fixture(scope="session")
def nv():
    """The helpers above (test modules cannot import conftest under --import-mode=importlib)."""
    return NVlabsKit
