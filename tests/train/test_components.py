"""Losses, regularizers, DiffAugment, EMA and the optimiser-state file, each against a hand-computed case."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganrt.errors import CheckpointError, ConfigError
from ganrt.train.augment import diff_augment
from ganrt.train.config import TrainConfig
from ganrt.train.ema import EMA
from ganrt.train.losses import get_loss
from ganrt.train.regularizers import feature_matching_loss, gradient_penalty, r1_penalty
from ganrt.train.state import load_train_state, save_train_state


def test_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    ns = get_loss("nonsaturating")
    expected_d = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert torch.allclose(ns.d_loss(real, fake), expected_d)
    assert torch.allclose(ns.g_loss(fake), -torch.log(torch.sigmoid(fake)).mean())
    hinge = get_loss("hinge")
    assert hinge.d_loss(real, fake).item() == pytest.approx((0 + 2 + 1.5 + 0) / 2)
    assert hinge.g_loss(fake).item() == pytest.approx(1.25)
    assert get_loss("wgan").d_loss(real, fake).item() == pytest.approx(-1.25 - 0.5)
    assert get_loss("wgan-gp").gradient_penalty and not get_loss("wgan").gradient_penalty


def test_unknown_loss():
    with pytest.raises(ConfigError, match="unknown adversarial loss 'lsgan'"):
        get_loss("lsgan")


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.tensor([1.0, -2.0, 3.0])
    x = torch.randn(5, 3, requires_grad=True)
    assert r1_penalty(x, x @ w).item() == pytest.approx(14.0)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    w = torch.tensor([0.6, 0.8])
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, torch.randn(4, 1, 1, 2), torch.randn(4, 1, 1, 2))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)
    gp2 = gradient_penalty(lambda x: x.flatten(1) @ (3 * w), torch.randn(4, 1, 1, 2), torch.randn(4, 1, 1, 2))
    assert gp2.item() == pytest.approx(4.0)


def test_feature_matching_compares_batch_means():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert feature_matching_loss(a, a.flip(0)).item() == 0.0
    fake = torch.zeros(2, 2, requires_grad=True)
    loss = feature_matching_loss(a, fake)
    assert loss.item() == pytest.approx((2.0**2 + 3.0**2) / 2)
    loss.backward()
    assert fake.grad is not None


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_is_seeded_shape_preserving_and_differentiable(policy):
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    policies = policy.split(",")
    a = diff_augment(x, policies, generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, policies, generator=torch.Generator().manual_seed(1))
    c = diff_augment(x, policies, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_zeroes_a_quarter_and_translation_keeps_content():
    x = torch.ones(2, 1, 16, 16)
    out = diff_augment(x, ["cutout"], generator=torch.Generator().manual_seed(0))
    zeroed = (out == 0).flatten(1).sum(1)
    assert ((zeroed > 0) & (zeroed <= 64)).all()
    moved = diff_augment(x, ["translation"], generator=torch.Generator().manual_seed(0))
    assert set(moved.unique().tolist()) <= {0.0, 1.0} and moved.sum() >= 2 * 12 * 12


def test_ema_averages_parameters_and_copies_buffers():
    model = nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.5, start=1)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    ema.update(model, step=0)  # before start: a plain copy
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.running_mean.fill_(9.0)
    ema.update(model, step=1)
    assert torch.allclose(ema.module.weight, torch.full((2,), 4.0))
    assert torch.equal(ema.module.running_mean, model.running_mean)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_optimizer_state_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.3, 0.9))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    rng = {"trainer": torch.Generator().manual_seed(5).get_state()}
    scalers = {"D": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                     "_growth_tracker": 7}}
    save_train_state(tmp_path / "s.safetensors", step=3, optimizers={"G": opt}, rng=rng, extra_state={"stage": 2},
                     grad_scalers=scalers, world_size=4)
    fresh = torch.optim.Adam(model.parameters(), lr=1.0)
    state = load_train_state(tmp_path / "s.safetensors", {"G": fresh})
    assert state.step == 3 and state.extra_state == {"stage": 2} and torch.equal(state.rng["trainer"], rng["trainer"])
    assert state.grad_scalers == scalers and state.world_size == 4
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_optimizer_state_for_another_model_is_refused(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 3)).sum().backward()
    opt.step()
    save_train_state(tmp_path / "s.safetensors", step=1, optimizers={"G": opt}, rng={}, extra_state={})
    other = torch.optim.Adam(nn.Linear(4, 2).parameters())
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_train_state(tmp_path / "s.safetensors", {"G": other})
    with pytest.raises(CheckpointError, match=r"holds optimisers \['G'\], this trainer has \['D', 'G'\]"):
        load_train_state(tmp_path / "s.safetensors", {"G": opt, "D": other})


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="unknown DiffAugment policy"):
        TrainConfig(diffaugment="color,flip")
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"stepz": 3})
    assert TrainConfig.from_dict(TrainConfig(betas=(0.0, 0.99)).to_dict()) == TrainConfig(betas=(0.0, 0.99))
