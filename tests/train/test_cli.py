"""`ganrt train` through the real CLI group: options, presets, resume, and one-line errors with exit 2."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from ganrt.checkpoint import read_checkpoint
from ganrt.cli import cli
from ganrt.train.config import TrainConfig

TINY = ["--steps", "2", "--batch-size", "4", "--width", "4", "--latent-dim", "8", "--threads", "1",
        "--no-progress", "--sample-every", "1", "--log-every", "1"]


def run(args):
    return CliRunner().invoke(cli, ["train", *args])


def test_train_help_documents_options_with_defaults():
    result = run(["--help"])
    assert result.exit_code == 0
    for text in ("--preset", "--r1-gamma", "--diffaugment", "--resume", "[default: 0.0002", "dcgan|stylegan"):
        assert text in result.output


def test_cli_defaults_agree_with_train_config():
    from ganrt.train.cli import DEFAULTS

    config = TrainConfig()
    for name, default in DEFAULTS.items():
        if name in ("beta1", "beta2"):
            assert config.betas[0 if name == "beta1" else 1] == default
        else:
            assert getattr(config, name) == default, name
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(DEFAULTS) - {"beta1", "beta2"} <= fields


def test_train_then_resume_further(tmp_path, labelled_npz):
    out = tmp_path / "run"
    result = run(["--dataset", str(labelled_npz), "--out", str(out), "--lr-d", "0.0003", "--beta1", "0.0", *TINY])
    assert result.exit_code == 0, result.output
    assert "checkpoint: " in result.output and "samples: " in result.output and "log: " in result.output
    result = run(["--out", str(out), "--resume", "--steps", "3", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["start_step"] == 2 and summary["step"] == 3
    config = read_checkpoint(out / "checkpoint.safetensors").train_config
    assert config["lr_d"] == 0.0003 and config["betas"] == [0.0, 0.999] and config["steps"] == 3


def test_preset_values_are_overridden_by_explicit_options(tmp_path, labelled_npz):
    out = tmp_path / "run"
    result = run(["--preset", "smoke", "--dataset", str(labelled_npz), "--steps", "1", "--out", str(out),
                  "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    config = read_checkpoint(out / "checkpoint.safetensors").train_config
    assert config["steps"] == 1 and config["width"] == 8 and config["batch_size"] == 16


@pytest.mark.parametrize("args, match", [
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--dataset", "/no/such/folder"], "does not exist"),
    (["--resume"], "cannot resume"),
    (["--conditional", "on", "--dataset", "UNLABELLED"], "conditional='on' needs labels"),
    (["--device", "tpu"], "device must be 'cpu' or 'cuda"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, unlabelled_npz, args, match):
    args = [str(unlabelled_npz) if a == "UNLABELLED" else a for a in args]
    result = run([*args, "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganrt: error:") and match in lines[0]


def test_resume_with_a_preset_is_a_usage_error(tmp_path):
    result = run(["--preset", "demo", "--resume", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--preset cannot be combined with --resume" in result.output


def test_every_preset_is_a_valid_config_and_offered_by_the_cli():
    from ganrt.train.cli import PRESET_NAMES
    from ganrt.train.presets import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
    for _, fields in PRESETS.values():
        TrainConfig(**fields)
    demo = TrainConfig(**PRESETS["demo"][1])
    assert demo.dataset == "mnist" and demo.conditional == "on" and demo.resolution == 32


def test_each_zoo_family_has_a_demo_preset_on_the_built_in_digits():
    from ganrt.models import names
    from ganrt.train.presets import PRESETS

    for arch in names():
        name = "demo" if arch == "dcgan" else f"{arch}-demo"
        assert name in PRESETS, f"no --preset {name}"
        config = TrainConfig(**PRESETS[name][1])
        assert (config.arch, config.dataset, config.resolution, config.conditional) == (arch, "mnist", 32, "on")


def test_minibatch_discrimination_and_ortho_reg_options_reach_the_run(tmp_path, labelled_npz):
    out = tmp_path / "run"
    result = run(["--dataset", str(labelled_npz), "--out", str(out), *TINY, "--minibatch-discrimination",
                  "--ortho-reg", "1e-3"])
    assert result.exit_code == 0, result.output
    ckpt = read_checkpoint(out / "checkpoint.safetensors")
    assert ckpt.train_config["ortho_reg"] == 1e-3 and ckpt.discriminator_config["minibatch_discrimination"] is True
    assert any(k.startswith("D.mbd.") for k in ckpt.tensors)
