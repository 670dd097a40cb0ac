"""A kill at any moment of training leaves a run that ``--resume`` continues from its last complete step, and
the continued run ends with the weights of an uninterrupted one, bit for bit.

Two ways: a kill simulated before each file replacement or removal of one checkpoint save (every state the
run directory passes through), and real SIGKILLs of a training process at random moments.
``GANRT_KILLS=200 pytest tests/train/test_crash_safety.py`` runs a longer SIGKILL loop and prints where the
kills landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ganrt.checkpoint import read_checkpoint, read_metadata
from ganrt.cli import cli
from ganrt.train import loop
from ganrt.train.state import CheckpointPair, read_state_step

from .conftest import tiny_config


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (but ``finally`` blocks still clean temporary files)."""


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoint.safetensors").tensors


def _kill_save_before_change(monkeypatch, at_step: int, change: int) -> dict[str, bool]:
    """Arm a kill in the checkpoint save of ``at_step``, just before its ``change``-th file replacement or removal."""
    seen = {"count": 0, "armed": False, "killed": False}
    real_save, real_replace, real_unlink = loop._save, os.replace, os.unlink

    def counted(real):
        def call(*args, **kwargs):
            if seen["armed"]:
                seen["count"] += 1
                if seen["count"] == change:
                    seen["killed"] = True
                    raise Killed
            return real(*args, **kwargs)
        return call

    def save(trainer, config, spec, data, out, step, snapshot):
        seen["armed"] = step == at_step
        try:
            return real_save(trainer, config, spec, data, out, step, snapshot=snapshot)
        finally:
            seen["armed"] = False

    monkeypatch.setattr(loop, "_save", save)
    monkeypatch.setattr(os, "replace", counted(real_replace))
    monkeypatch.setattr(os, "unlink", counted(real_unlink))
    return seen


@pytest.mark.parametrize("change", [1, 2, 3, 4])
def test_a_kill_during_a_checkpoint_save_resumes_from_the_last_complete_step_exactly(tmp_path, labelled_npz,
                                                                                   monkeypatch, change):
    config = tiny_config(labelled_npz, steps=6, checkpoint_every=2, r1_gamma=1.0, r1_every=2,
                         diffaugment="color,translation,cutout", ema_decay=0.9)
    loop.train(config, tmp_path / "full", progress=False)
    seen = _kill_save_before_change(monkeypatch, at_step=4, change=change)
    with pytest.raises(Killed):
        loop.train(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert seen["killed"]
    committed = read_metadata(tmp_path / "run" / "checkpoint.safetensors")["step"]
    assert committed in (2, 4)  # the save of step 4 either landed whole or not at all
    result = loop.train(config, tmp_path / "run", resume=True, progress=False)
    assert result.start_step == committed
    full, run = _tensors(tmp_path / "full"), _tensors(tmp_path / "run")
    assert all(torch.equal(full[k], run[k]) for k in full)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- real SIGKILLs ---------------------------------------------------------------------------------------------------
ARGS = ["--batch-size", "4", "--width", "4", "--latent-dim", "8", "--threads", "1",
        "--checkpoint-every", "1", "--sample-every", "1000", "--log-every", "1", "--no-progress",
        "--r1-gamma", "1", "--r1-every", "2", "--diffaugment", "color,translation,cutout"]


def _logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _where(run: Path) -> str:
    """Which moment of a save a kill left the run directory in."""
    pair = CheckpointPair(run)
    if any(run.glob(".*.tmp")):
        return "during a file write (a temporary file left behind)"
    if not pair.previous.exists():
        return "between saves"
    state, committed = read_state_step(pair.state), pair.committed_step()
    if state is None:
        return "after setting the committed state aside, before writing the new one"
    if state != committed:
        return "after writing the new state, before committing the checkpoint"
    return "after committing the checkpoint, before deleting the previous state"


def test_sigkill_at_random_moments_never_loses_the_run(tmp_path, labelled_npz):
    kills = int(os.environ.get("GANRT_KILLS", "3"))
    steps = 10 * kills + 20  # a process trains a few steps before it is killed
    args = [*ARGS, "--steps", str(steps)]
    rng = random.Random(0)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ganrt.train", "--dataset", str(labelled_npz), "--out", str(run), *args]
    where: Counter[str] = Counter()
    last = 0
    while sum(where.values()) < kills:
        resume = ["--resume"] if (run / "checkpoint.safetensors").exists() else []
        logged = _logged(run)
        proc = subprocess.Popen([*command, *resume], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while _logged(run) <= logged and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # until this process trains
        time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            pytest.fail(f"the run finished after {sum(where.values())} kills; give it more steps")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        where[_where(run)] += 1
        if (run / "checkpoint.safetensors").exists():  # a whole pair of the last committed step is there
            committed = CheckpointPair(run).committed_step()
            assert read_state_step(CheckpointPair(run).state_for(committed)) == committed
            assert committed >= last  # no kill loses a committed step
            last = committed
    done = subprocess.run([*command, "--resume", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["start_step"] == last
    print(f"\n{sum(where.values())} SIGKILLs, last committed step {last}:", dict(where))

    reference = CliRunner().invoke(cli, ["train", "--dataset", str(labelled_npz), "--out", str(tmp_path / "ref"),
                                         *args])
    assert reference.exit_code == 0, reference.output
    ref, got = _tensors(tmp_path / "ref"), _tensors(run)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
