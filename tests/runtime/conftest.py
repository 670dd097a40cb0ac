"""Runtime fixtures: a real fp32 bundle of the tiny conditional DCGAN (exported once per session) and
copies of it whose manifest a test may edit."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="session")
def contrast_checkpoint(tmp_path_factory, tiny_checkpoint):
    """tiny_checkpoint with its last layer's weights scaled x60: a random-init generator's images are
    otherwise nearly flat (std < 1 level), which would make a one-level parity test prove nothing."""
    import torch

    from ganrt.checkpoint import Checkpoint, load_generator, save_checkpoint

    g, spec = load_generator(tiny_checkpoint)
    last = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.weight.mul_(60.0)
    tensors = {f"G_ema.{k}": v for k, v in g.state_dict().items()}
    path = tmp_path_factory.mktemp("rt-ckpt") / "contrast.safetensors"
    save_checkpoint(path, Checkpoint(spec=spec, tensors=tensors))
    return path


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, contrast_checkpoint):
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("rt") / "bundle"
    export_checkpoint(contrast_checkpoint, out, options=ExportOptions(precisions=("fp32",), max_batch=64))
    return out


@pytest.fixture
def edit_bundle(bundle_dir, tmp_path):
    """edit_bundle(fn) -> a copy of the bundle whose manifest dict went through fn(manifest)."""

    def make(fn=None):
        dest = tmp_path / f"bundle-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(bundle_dir, dest)
        if fn is not None:
            path = dest / "manifest.json"
            manifest = json.loads(path.read_text())
            fn(manifest)
            path.write_text(json.dumps(manifest))
        return dest

    return make


@pytest.fixture(scope="session")
def seeds_labels():
    """Seeds and labels for batch 64 (batch 1 and 7 are prefixes)."""
    import numpy as np

    seeds = list(range(100, 164))
    return seeds, np.arange(64, dtype=np.int64) % 10
