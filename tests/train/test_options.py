"""TrainConfig options that reach the models and the losses: minibatch discrimination in every D,
orthogonal regularization in G's step, and family-trainer options (``trainer_options``)."""

from __future__ import annotations

import pytest
import torch

from ganrt.checkpoint import read_checkpoint
from ganrt.errors import ConfigError
from ganrt.models import get
from ganrt.models.biggan import orthogonal_regularization
from ganrt.models.layers import MinibatchDiscrimination
from ganrt.spec import GeneratorSpec
from ganrt.train.config import TrainConfig
from ganrt.train.loop import train
from ganrt.train.trainer import Batch, trainer_class

from .conftest import tiny_config

TINY = {"dcgan": {"width": 4, "embed_dim": 4},
        "stylegan": {"w_dim": 8, "mapping_layers": 1, "width": 4, "max_width": 8, "embed_dim": 4},
        "biggan": {"width": 4, "max_width": 8, "shared_dim": 4, "attn_resolution": 8},
        "progan": {"width": 4, "max_width": 8, "embed_dim": 4},
        "vae": {"width": 4, "max_width": 8, "embed_dim": 4}}


def _trainer(arch: str, **config):
    family = get(arch)
    spec = GeneratorSpec(arch=arch, latent_dim=8, channels=1, height=16, width=16, num_classes=3,
                         has_truncation=family.has_truncation, arch_kwargs=dict(TINY[arch]))
    cfg = TrainConfig(arch=arch, resolution=16, steps=4, batch_size=4, latent_dim=8, **config)
    torch.manual_seed(0)
    return trainer_class(family)(cfg, spec)


def _batch(seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(images=torch.rand(4, 1, 16, 16, generator=gen) * 2 - 1, labels=torch.tensor([0, 1, 2, 0]))


def _has_mbd(module) -> bool:
    return any(isinstance(m, MinibatchDiscrimination) for m in module.modules())


@pytest.mark.parametrize("arch", ["dcgan", "stylegan", "biggan", "progan"])
def test_minibatch_discrimination_option_changes_every_discriminator(arch):
    off, on = _trainer(arch), _trainer(arch, minibatch_discrimination=True)
    assert not _has_mbd(off.D) and _has_mbd(on.D)
    assert on.discriminator_config()["minibatch_discrimination"] is True
    logs = on.step(_batch(), 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(p is on.D.mbd.T for p in on.optimizers["D"].param_groups[0]["params"])


def test_minibatch_discrimination_run_checkpoints_a_discriminator_that_rebuilds(tmp_path, labelled_npz):
    run = tmp_path / "run"
    train(tiny_config(labelled_npz, steps=2, minibatch_discrimination=True), run, progress=False)
    ckpt = read_checkpoint(run / "checkpoint.safetensors")
    assert ckpt.discriminator_config["minibatch_discrimination"] is True
    assert "D.mbd.T" in ckpt.tensors
    d = get("dcgan").build_discriminator(ckpt.spec, **ckpt.discriminator_config)
    d.load_state_dict(ckpt.state_dict("D"))


def test_ortho_reg_adds_the_biggan_term_to_g_step_only():
    plain, reg = _trainer("biggan"), _trainer("biggan", ortho_reg=1e-2)
    before = orthogonal_regularization(reg.G, 1e-2).item()
    logs_plain, logs_reg = plain.step(_batch(), 0), reg.step(_batch(), 0)
    assert "ortho" not in logs_plain
    assert logs_reg["ortho"] == pytest.approx(before, rel=1e-6) and before > 0
    # the D step comes first and is untouched; G moved differently
    for (name, a), b in zip(plain.D.state_dict().items(), reg.D.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(plain.G.parameters(), reg.G.parameters(), strict=True))


def test_options_are_validated():
    with pytest.raises(ConfigError, match="ortho_reg must be >= 0"):
        TrainConfig(ortho_reg=-1.0)
    with pytest.raises(ConfigError, match="trainer_options must be a dict"):
        TrainConfig(trainer_options=[1])
    with pytest.raises(ConfigError, match=r"unknown trainer_options \['drift'\].*AdversarialTrainer.*known: none"):
        _trainer("dcgan", trainer_options={"drift": 1.0})
    with pytest.raises(ConfigError, match=r"unknown trainer_options \['sigma'\].*known: kl_warmup, recon_sigma"):
        _trainer("vae", trainer_options={"sigma": 1.0})
    with pytest.raises(ConfigError, match="recon_sigma must be > 0"):
        _trainer("vae", trainer_options={"recon_sigma": 0.0})
    with pytest.raises(ConfigError, match=r"start_stage must be an integer in \[0, 2\]"):
        _trainer("progan", trainer_options={"start_stage": 3})
    with pytest.raises(ConfigError, match="drift must be >= 0"):
        _trainer("progan", trainer_options={"drift": -1.0})


def test_vae_recon_sigma_scales_the_reconstruction_term():
    a = _trainer("vae", trainer_options={"recon_sigma": 0.2})
    b = _trainer("vae", trainer_options={"recon_sigma": 0.4, "kl_warmup": 0.5})
    assert b.kl_warmup == 2 and a.kl_warmup == 1
    la, lb = a.step(_batch(), 0), b.step(_batch(), 0)
    assert la["kl"] == pytest.approx(lb["kl"])  # same weights, same noise: only the weighting differs
    assert la["recon"] == pytest.approx(4 * lb["recon"], rel=1e-5)


def test_progan_start_stage_and_drift():
    t = _trainer("progan", trainer_options={"start_stage": 1, "drift": 0.5})
    assert t.stage == 1 and t.phase_steps == 4 // 3
    logs = t.step(_batch(), 0)
    assert logs["stage"] == 1.0
    assert _trainer("progan").stage == 0


def test_resume_is_exact_with_the_new_options(tmp_path, labelled_npz):
    config = tiny_config(labelled_npz, steps=4, checkpoint_every=2, minibatch_discrimination=True, ortho_reg=1e-3)
    train(config, tmp_path / "full", progress=False)
    train(config.replace(steps=2), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors").tensors
    split = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors").tensors
    assert set(full) == set(split) and "D.mbd.T" in full
    assert [k for k in full if not torch.equal(full[k], split[k])] == []
    with pytest.raises(ConfigError, match="ortho_reg"):
        train(config.replace(steps=6, ortho_reg=0.0), tmp_path / "split", resume=True, progress=False)


def test_resume_is_exact_with_vae_trainer_options(tmp_path, labelled_npz):
    # the warm-up is fixed when a run starts (from its steps then); 0.25 of 2 and of 4 steps both give 1 step,
    # so the 2-step start and the 4-step run share the schedule and must end equal
    config = tiny_config(labelled_npz, arch="vae", steps=4, checkpoint_every=2, arch_kwargs={"embed_dim": 4},
                         trainer_options={"recon_sigma": 0.5, "kl_warmup": 0.25})
    train(config, tmp_path / "full", progress=False)
    train(config.replace(steps=2), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors").tensors
    split = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors").tensors
    assert [k for k in full if not torch.equal(full[k], split[k])] == []
