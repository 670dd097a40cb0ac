"""The training loop: smoke runs, the checkpoint it writes, determinism and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganrt.checkpoint import load_generator, read_checkpoint
from ganrt.errors import CheckpointError, ConfigError, DataError
from ganrt.spec import GeneratorSpec
from ganrt.train.loop import train

from .conftest import tiny_config


def _tensors(run):
    return read_checkpoint(run / "checkpoint.safetensors").tensors


def test_conditional_smoke_run_writes_the_run_directory(tmp_path, labelled_npz):
    run = tmp_path / "run"
    result = train(tiny_config(labelled_npz), run, progress=False)
    assert result.step == 4 and result.checkpoint == run / "checkpoint.safetensors"
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    assert (run / "checkpoints" / "step-000004.safetensors").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert all(np.isfinite(x["d_loss"]) and np.isfinite(x["g_loss"]) and x["images_per_s"] > 0 for x in lines)
    options = json.loads((run / "options.json").read_text())
    assert options["spec"]["num_classes"] == 3 and options["config"]["steps"] == 4
    from PIL import Image

    grid = Image.open(result.samples)
    assert grid.size == (2 * (2 * 34 + 2), 2 * (3 * 34 + 2))  # 2 columns, one row per class, 2px pad, scale 2


def test_checkpoint_round_trips_spec_and_weights(tmp_path, labelled_npz):
    run = tmp_path / "run"
    config = tiny_config(labelled_npz, spectral_norm=True)
    train(config, run, progress=False)
    ckpt = read_checkpoint(run / "checkpoint.safetensors")
    options = json.loads((run / "options.json").read_text())
    assert ckpt.spec == GeneratorSpec.from_dict(options["spec"])
    assert ckpt.step == 4 and ckpt.train_config == config.to_dict()
    assert ckpt.discriminator_config == {"spectral_norm": True, "minibatch_stddev": True,
                                         "minibatch_discrimination": False, "width": 4}
    assert ckpt.dataset["sha256"] == options["dataset"]["sha256"]
    g, spec = load_generator(run / "checkpoint.safetensors")
    assert spec == ckpt.spec and not g.training
    for k, v in g.state_dict().items():
        assert torch.equal(v, ckpt.tensors[f"G_ema.{k}"]), k
    g_raw, _ = load_generator(run / "checkpoint.safetensors", ema=False)
    assert any(not torch.equal(v, ckpt.tensors[f"G_ema.{k}"]) for k, v in g_raw.state_dict().items())
    from ganrt.models import get

    d = get("dcgan").build_discriminator(spec, **ckpt.discriminator_config)
    d.load_state_dict(ckpt.state_dict("D"))  # D rebuilds from spec + discriminator_config alone


def test_unconditional_run_on_unlabelled_rgb_data(tmp_path, unlabelled_npz):
    run = tmp_path / "run"
    result = train(tiny_config(unlabelled_npz, loss="hinge", steps=2), run, progress=False)
    g, spec = load_generator(result.checkpoint)
    assert spec.num_classes == 0 and spec.channels == 3
    x = g(torch.randn(2, spec.latent_dim))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1


def test_conditional_off_ignores_labels_and_on_requires_them(tmp_path, labelled_npz, unlabelled_npz):
    result = train(tiny_config(labelled_npz, conditional="off", steps=1), tmp_path / "a", progress=False)
    assert read_checkpoint(result.checkpoint).spec.num_classes == 0
    with pytest.raises(ConfigError, match="conditional='on' needs labels"):
        train(tiny_config(unlabelled_npz, conditional="on"), tmp_path / "b", progress=False)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, labelled_npz):
    config = tiny_config(labelled_npz, steps=3, diffaugment="color,translation,cutout")
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    train(config.replace(seed=1), tmp_path / "c", progress=False)
    a, b, c = _tensors(tmp_path / "a"), _tensors(tmp_path / "b"), _tensors(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("G."))


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, labelled_npz):
    # every stateful feature on: lazy R1, DiffAugment, feature matching, spectral norm, EMA start, BN stats
    config = tiny_config(labelled_npz, steps=6, checkpoint_every=3, r1_gamma=1.0, r1_every=2,
                         diffaugment="color,translation,cutout", feature_matching=0.5, spectral_norm=True,
                         ema_start=2, ema_decay=0.9)
    train(config, tmp_path / "full", progress=False)
    train(config.replace(steps=3), tmp_path / "split", progress=False)
    result = train(config, tmp_path / "split", resume=True, progress=False)
    assert result.start_step == 3 and result.step == 6
    full, split = _tensors(tmp_path / "full"), _tensors(tmp_path / "split")
    assert set(full) == set(split) and {k.split(".")[0] for k in full} == {"G", "G_ema", "D"}
    mismatched = [k for k in full if not torch.equal(full[k], split[k])]
    assert mismatched == []
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_drops_log_lines_past_the_checkpoint(tmp_path, labelled_npz):
    run = tmp_path / "run"
    train(tiny_config(labelled_npz, steps=2), run, progress=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 9, "d_loss": 0.0}) + "\n")  # an interrupted run logged past its checkpoint
    train(tiny_config(labelled_npz, steps=3), run, resume=True, progress=False)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path, labelled_npz):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="cannot resume: .* does not exist"):
        train(tiny_config(labelled_npz), run, resume=True, progress=False)
    train(tiny_config(labelled_npz, steps=1), run, progress=False)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(tiny_config(labelled_npz, steps=1), run, progress=False)


def test_resume_with_changed_options_or_data_is_refused(tmp_path, labelled_npz, unlabelled_npz):
    run = tmp_path / "run"
    train(tiny_config(labelled_npz, steps=1), run, progress=False)
    with pytest.raises(ConfigError, match=r"changed options \(lr_d: 0.0002 -> 0.001\)"):
        train(tiny_config(labelled_npz, steps=2, lr_d=1e-3), run, resume=True, progress=False)
    other = labelled_npz.with_name("other.npz")
    with np.load(labelled_npz) as f:
        np.savez(other, images=255 - f["images"], labels=f["labels"])
    with pytest.raises(DataError, match="cannot resume .* trained on dataset 'labelled.npz'"):
        train(tiny_config(other, steps=2), run, resume=True, progress=False)


def test_corrupt_or_foreign_checkpoint_gives_checkpoint_error(tmp_path, labelled_npz):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    train(tiny_config(labelled_npz, steps=1), run, progress=False)
    ckpt = run / "checkpoint.safetensors"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint|truncated"):
        train(tiny_config(labelled_npz, steps=2), run, resume=True, progress=False)
    save_file({"weight": torch.zeros(2)}, str(ckpt))
    with pytest.raises(CheckpointError, match="not a ganrt checkpoint"):
        train(tiny_config(labelled_npz, steps=2), run, resume=True, progress=False)
    ckpt.write_bytes(good)
    (run / "checkpoint.optim.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="checkpoint.optim.safetensors is not a readable safetensors file"):
        train(tiny_config(labelled_npz, steps=2), run, resume=True, progress=False)
    (run / "checkpoint.optim.safetensors").unlink()
    with pytest.raises(CheckpointError, match="is missing: --resume needs the optimiser state"):
        train(tiny_config(labelled_npz, steps=2), run, resume=True, progress=False)


def test_optimizer_state_from_another_step_is_detected(tmp_path, labelled_npz):
    run = tmp_path / "run"
    train(tiny_config(labelled_npz, steps=2, checkpoint_every=1), run, progress=False)
    state = (run / "checkpoint.optim.safetensors").read_bytes()
    train(tiny_config(labelled_npz, steps=3, checkpoint_every=1), run, resume=True, progress=False)
    (run / "checkpoint.optim.safetensors").write_bytes(state)  # replaced by hand with an older step's state
    with pytest.raises(CheckpointError, match=r"no optimiser state of step 3 .*checkpoint.optim.safetensors: step 2"):
        train(tiny_config(labelled_npz, steps=4), run, resume=True, progress=False)


def test_cuda_device_without_a_gpu_is_backend_unavailable(tmp_path, labelled_npz):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from ganrt.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        train(tiny_config(labelled_npz, device="cuda"), tmp_path / "run", progress=False)


def test_unsupported_resolution(tmp_path, labelled_npz):
    with pytest.raises(ConfigError, match=r"dcgan supports resolutions \[32, 64, 128\], got 16"):
        train(tiny_config(labelled_npz, resolution=16), tmp_path / "run", progress=False)
