"""The Trainer extension point: a family with its own trainer (no D, extra state) runs through the loop,
checkpoints and resumes exactly."""

from __future__ import annotations

import textwrap

import pytest
import torch

from ganrt.checkpoint import read_checkpoint
from ganrt.train.loop import train

from .conftest import tiny_config

CUSTOM = textwrap.dedent('''
    import torch
    from ganrt.train.trainer import Trainer

    class MeanMatchTrainer(Trainer):
        """G alone, pulled towards the batch mean image; counts its steps in extra state."""

        def build_models(self):
            return self.family.build_generator(self.spec), None

        def step(self, batch, step):
            self.calls = getattr(self, "calls", 0) + 1
            fake = self.G(self.randn(batch.images.shape[0], self.spec.latent_dim), batch.labels)
            loss = (fake.mean(0) - batch.images.mean(0)).square().mean()
            self.optimizers["G"].zero_grad()
            loss.backward()
            self.optimizers["G"].step()
            return {"loss": loss.item()}

        def extra_state(self):
            return {"calls": self.calls}

        def load_extra_state(self, state):
            self.calls = state["calls"]

    class NotATrainer:
        pass
''')


@pytest.fixture
def custom_family(tmp_path, monkeypatch):
    import dataclasses

    from ganrt import models

    (tmp_path / "custom_trainer_mod.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    family = dataclasses.replace(models.get("dcgan"), name="meanmatch",
                                 trainer="custom_trainer_mod:MeanMatchTrainer", default_loss="mse")
    monkeypatch.setitem(models._REGISTRY, "meanmatch", family)
    return family


def test_custom_trainer_without_discriminator_trains_checkpoints_and_resumes(tmp_path, labelled_npz, custom_family):
    config = tiny_config(labelled_npz, arch="meanmatch", steps=4)
    train(config, tmp_path / "full", progress=False)
    train(config.replace(steps=2), tmp_path / "split", progress=False)
    train(config, tmp_path / "split", resume=True, progress=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoint.safetensors")
    split = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    assert {k.split(".")[0] for k in full.tensors} == {"G", "G_ema"}  # no D slot
    assert full.extra["trainer"] == "custom_trainer_mod:MeanMatchTrainer"
    assert all(torch.equal(full.tensors[k], split.tensors[k]) for k in full.tensors)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "split" / "checkpoint.optim.safetensors"), framework="pt") as f:
        assert '"calls": 4' in f.metadata()["ganrt"]  # 2 + 2: extra state survived the resume


def test_a_trainer_that_is_not_a_trainer_subclass_is_refused(tmp_path, labelled_npz, custom_family, monkeypatch):
    import dataclasses

    from ganrt import models

    monkeypatch.setitem(models._REGISTRY, "meanmatch",
                        dataclasses.replace(custom_family, trainer="custom_trainer_mod:NotATrainer"))
    with pytest.raises(TypeError, match="is not a ganrt.train.trainer.Trainer"):
        train(tiny_config(labelled_npz, arch="meanmatch"), tmp_path / "run", progress=False)


def test_adversarial_training_of_a_family_without_discriminator_is_refused(tmp_path, labelled_npz, monkeypatch):
    import dataclasses

    from ganrt import models
    from ganrt.errors import ConfigError

    family = dataclasses.replace(models.get("dcgan"), name="nod", build_discriminator=None)
    monkeypatch.setitem(models._REGISTRY, "nod", family)
    with pytest.raises(ConfigError, match="'nod' has no discriminator"):
        train(tiny_config(labelled_npz, arch="nod"), tmp_path / "run", progress=False)
