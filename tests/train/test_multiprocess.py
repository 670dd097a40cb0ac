"""Training on 2 CPU processes (torch.distributed, gloo on loopback, started by torch's elastic launcher).

One launch of ``multiproc_worker.py`` trains every family, the equivalence configurations and a reference
run; the resume test starts ``torchrun -m ganrt.train`` and the fault test ``ganrt train --nproc-per-node 2``.
Tiny models, tens of steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ganrt.checkpoint import read_checkpoint
from ganrt.train.loop import train

from . import multiproc_worker as worker

TIMEOUT = 300  # seconds for one launch: far above what it takes, so a hang fails instead of stalling CI


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoint.safetensors").tensors


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def _logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """24 random 32x32 gray images in 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "labelled.npz"
    np.savez(path, images=rng.integers(0, 256, (24, 32, 32), dtype=np.uint8), labels=np.arange(24) % 3)
    return path


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory, dataset) -> Path:
    """Every job of multiproc_worker.py trained on 2 processes, in one launch."""
    out = tmp_path_factory.mktemp("two-procs")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(Path(worker.__file__)), str(out), str(dataset)], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.parametrize("family", ["dcgan", "stylegan", "biggan", "progan", "vae"])
def test_every_trainer_trains_on_two_processes(worker_runs, family):
    run = worker_runs / f"family-{family}"
    assert not (worker_runs / f"family-{family}.error").exists(), (worker_runs / f"family-{family}.error").read_text()
    config = worker.jobs("unused")[f"family-{family}"]
    ckpt = read_checkpoint(run / "checkpoint.safetensors")
    assert ckpt.step == config.steps
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())
    options = json.loads((run / "options.json").read_text())
    assert options["launch"]["world_size"] == 2 and options["launch"]["backend"] == "gloo"
    assert options["launch"]["batch_per_process"] == 4 and options["config"]["batch_size"] == 8
    assert _logged_steps(run) == list(range(1, config.steps + 1))
    assert sorted(p.name for p in (run / "samples").glob("*.png"))[-1] == f"step-{config.steps:06d}.png"
    if family == "progan":  # grew from 4x4 to 16x16 through fade-ins while split over two processes
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["stage"] for x in lines] == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
        assert [x["alpha"] for x in lines if x["alpha"] < 1] == [0.5, 0.5]


@pytest.mark.parametrize("name", ["equal-flatgan", "equal-progan"])
def test_one_step_on_two_ranks_equals_one_step_on_one_rank_with_the_whole_batch(worker_runs, tmp_path, dataset,
                                                                               name):
    # flatgan: the adversarial trainer with lazy R1 and DiffAugment; progan: its trainer with WGAN-GP
    worker.register_test_families()
    config = worker.jobs(str(dataset))[name]
    train(config, tmp_path / "one", progress=False)  # 1 process, the global batch of 8
    train(config.replace(batch_size=4), tmp_path / "half", progress=False)  # 1 process, one rank's share only
    two, one, half = _tensors(worker_runs / name), _tensors(tmp_path / "one"), _tensors(tmp_path / "half")
    assert _max_diff(two, one) < 1e-6
    assert _max_diff(half, one) > 1e-4  # the comparison sees a batch that differs


def test_a_trainer_that_bypasses_ddp_is_stopped_at_its_first_checkpoint(worker_runs):
    error = (worker_runs / "diverge-meanmatch.error").read_text()
    assert "no longer hold the same weights" in error and "MeanMatchTrainer" in error
    assert not (worker_runs / "diverge-meanmatch" / "checkpoint.safetensors").exists()


def test_resume_on_another_world_size_continues_within_float_tolerance(worker_runs, tmp_path, dataset):
    # (on the same world size a resume is exact: see the killed-rank test below)
    config = worker.reference_config(str(dataset))
    train(config.replace(steps=30), tmp_path / "one", progress=False)
    at_split = _tensors(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    train(config, tmp_path / "one", resume=True, progress=False)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "ganrt.train", "--out", str(tmp_path / "two"), "--resume", "--steps", "60",
                           "--no-progress"], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # torchrun -m ganrt.train itself
    launch = json.loads((tmp_path / "two" / "options.json").read_text())["launch"]
    assert launch["resumed_from"] == {"step": 30, "world_size": 1} and launch["world_size"] == 2
    one, two = _tensors(tmp_path / "one"), _tensors(tmp_path / "two")
    assert _logged_steps(tmp_path / "two") == _logged_steps(tmp_path / "one") == list(range(10, 61, 10))
    # the same data order and noise on 2 processes as on 1; only the order of float additions differs
    assert _max_diff(one, two) < 1e-4 < _max_diff(two, at_split)


def _workers_of(launcher: int) -> dict[int, int]:
    """rank -> pid of the worker processes the launcher (pid ``launcher``) started."""
    found = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            except OSError:
                continue
            if "RANK" in env:
                found[int(env["RANK"])] = int(pid)
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds worker processes through /proc (Linux)")
def test_a_killed_rank_is_restarted_and_the_run_continues_from_its_checkpoint(worker_runs, tmp_path, dataset):
    reference = worker_runs / "reference"  # the same run on 2 processes, uninterrupted
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ganrt", "train", *worker.REFERENCE_ARGS, "--dataset", str(dataset),
                             "--out", str(run), "--nproc-per-node", "2", "--max-restarts", "1", "--no-progress"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "checkpoint.safetensors").exists():  # the first checkpoint (step 5) is written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.01)
        victim = _workers_of(proc.pid)[1]
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    options = json.loads((run / "options.json").read_text())
    # the command line ran the configuration the worker ran
    assert options["config"] == json.loads((reference / "options.json").read_text())["config"]
    assert options["launch"]["restarts"] == 1 and 5 <= options["launch"]["resumed_from"]["step"] < 60, options
    assert _logged_steps(run) == _logged_steps(reference) == list(range(10, 61, 10))  # every step logged once
    ref = _tensors(reference)
    assert all(torch.equal(ref[k], v) for k, v in _tensors(run).items())  # as if nothing had happened
