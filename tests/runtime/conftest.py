"""Runtime fixtures: copies of the tiny bundle whose manifest a test may edit, and a bundle of every precision."""

from __future__ import annotations

import json
import shutil

import pytest


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


@pytest.fixture(scope="session")
def every_precision_bundle(tmp_path_factory, contrast_checkpoint):
    """The bundle `ganrt export --precision fp32,fp16,int8,bf16 --openvino-int8` writes (random weights: a
    variant outside its tolerance is kept, marked failed, so every CPU variant can be loaded by name)."""
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("every") / "bundle"
    export_checkpoint(contrast_checkpoint, out, options=ExportOptions(
        precisions=("fp32", "fp16", "int8", "bf16"), openvino_int8=True, openvino_calibration_size=32,
        calibration_size=16, max_batch=16, verify_batch_cap=8, allow_failed_parity=True))
    return out
