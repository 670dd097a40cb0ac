"""Small datasets on disk for the training tests (no network, a few KB each)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def write_png(path, array) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def labelled_npz(tmp_path):
    """24 random 32x32 gray images in 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "labelled.npz"
    np.savez(path, images=rng.integers(0, 256, (24, 32, 32), dtype=np.uint8),
             labels=np.arange(24, dtype=np.int64) % 3)
    return path


@pytest.fixture
def unlabelled_npz(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "unlabelled.npz"
    np.savez(path, images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    return path


@pytest.fixture
def image_folder(tmp_path):
    """12 random RGB images, 36x40 (resized and cropped when loaded), in class subfolders cat/ and dog/."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(6):
            write_png(tmp_path / "images" / cls / f"{i}.png", rng.integers(0, 256, (36, 40, 3), dtype=np.uint8))
    return tmp_path / "images"


def tiny_config(dataset, **changes):
    """A TrainConfig that trains in well under a second per step on one thread."""
    from ganrt.train.config import TrainConfig

    base = dict(dataset=str(dataset), resolution=32, steps=4, batch_size=4, width=4, latent_dim=8,
                arch_kwargs={"embed_dim": 4}, sample_every=2, checkpoint_every=2, log_every=1, sample_columns=2,
                threads=1)
    base.update(changes)
    return TrainConfig(**base)


def train_in_fresh_process(config, out, resume: bool = False) -> None:
    """``ganrt.train.loop.train`` in a new interpreter. For runs with DataLoader workers: torch then installs a
    SIGCHLD handler for good, and in a pytest process that holds onnxruntime/OpenVINO threads from earlier tests
    a later child's exit crashed the whole process (SIGSEGV); a plain training process has no such threads."""
    code = ("import json, sys; from ganrt.train.config import TrainConfig; from ganrt.train.loop import train; "
            "train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], resume=sys.argv[3] == '1', "
            "progress=False)")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(config.to_dict()), str(out), str(int(resume))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
