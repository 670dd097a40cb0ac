"""The CUDA paths of training: fp16 with gradient scalers, bf16, channels_last, DataLoader workers with pinned
memory, and (on two GPUs) NCCL with SyncBatchNorm. Skipped without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ganrt.checkpoint import read_checkpoint
from ganrt.train.loop import train
from ganrt.train.state import load_train_state

from . import multiproc_worker as worker
from .conftest import tiny_config, train_in_fresh_process

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fp16_channels_last_and_loader_workers_train_and_resume_on_cuda(tmp_path, image_folder):
    config = tiny_config(image_folder, device="cuda", precision="fp16", channels_last=True, data_workers=2, steps=4,
                         checkpoint_every=2, r1_gamma=1.0, r1_every=1, diffaugment="color,translation")
    train_in_fresh_process(config, tmp_path / "full")
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for line in lines for v in line.values()) and lines[-1]["images_per_s"] > 0
    train_in_fresh_process(config.replace(steps=2), tmp_path / "split")
    from ganrt.models import get
    from ganrt.train.trainer import trainer_class

    ckpt = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    trainer = trainer_class(get("dcgan"))(config, ckpt.spec, device="cuda")
    state = load_train_state(tmp_path / "split" / "checkpoint.optim.safetensors", trainer.optimizers)
    assert set(state.grad_scalers) == {"D", "G"} and all(s["scale"] > 0 for s in state.grad_scalers.values())
    train_in_fresh_process(config, tmp_path / "split", resume=True)
    options = json.loads((tmp_path / "split" / "options.json").read_text())
    assert options["launch"]["resumed_from"]["step"] == 2
    a = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors").tensors
    b = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors").tensors
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()) < 1e-3


@pytest.mark.parametrize("arch", ["dcgan", "stylegan", "biggan", "progan", "vae"])
def test_bf16_trains_every_family_on_cuda(tmp_path, labelled_npz, arch):
    config = worker.config(arch, str(labelled_npz), steps=2, device="cuda", precision="bf16", channels_last=True)
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 2 and all(np.isfinite(v) for v in result.losses.values())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_with_nccl_and_sync_batchnorm(tmp_path, labelled_npz):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ganrt", "train", "--dataset", str(labelled_npz), "--out", str(run),
                           "--steps", "4", "--batch-size", "8", "--width", "4", "--latent-dim", "8", "--device", "cuda",
                           "--precision", "fp16", "--sync-batchnorm", "--channels-last", "--no-progress",
                           "--nproc-per-node", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    launch = json.loads((run / "options.json").read_text())["launch"]
    assert launch["world_size"] == 2 and launch["backend"] == "nccl"
