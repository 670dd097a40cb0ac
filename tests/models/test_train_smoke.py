"""Every registered architecture trains: a few steps of its trainer on tiny random data give finite losses
and move the weights; the family-specific schedules (progressive growth, KL warm-up) behave."""

from __future__ import annotations

import math

import pytest

from ganrt.models import get, names

torch = pytest.importorskip("torch")


def _trainer(arch, kit, steps=6, conditional=True):
    from ganrt.train.config import TrainConfig
    from ganrt.train.trainer import trainer_class

    spec = kit.tiny_spec(arch, conditional=conditional)
    config = TrainConfig(arch=arch, resolution=spec.height, steps=steps, batch_size=8, latent_dim=spec.latent_dim,
                         r1_gamma=1.0, r1_every=2)
    return trainer_class(get(arch))(config, spec)


@pytest.mark.parametrize("arch", names())
def test_a_few_training_steps_give_finite_losses_and_move_the_weights(arch, kit):
    from ganrt.train.trainer import Batch

    torch.manual_seed(0)
    trainer = _trainer(arch, kit)
    spec = trainer.spec
    before = {k: v.clone() for k, v in trainer.G_ema.state_dict().items()}
    data = torch.rand(8, spec.channels, spec.height, spec.width) * 2 - 1
    for step in range(trainer.config.steps):
        logs = trainer.step(Batch(data, torch.randint(0, spec.num_classes, (8,))), step)
        trainer.update_ema(step)
        assert logs and all(math.isfinite(v) for v in logs.values()), logs
    after = trainer.G_ema.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"
    images = trainer.sample(torch.randn(3, spec.latent_dim), torch.arange(3))
    assert images.shape == (3, spec.channels, spec.height, spec.width)
    assert torch.isfinite(images).all()


def test_progan_schedule_grows_through_every_level_with_fade_ins():
    from ganrt.train.progan import growth_at

    levels, phase = 2, 4  # phases: 4x4, fade 8, 8, fade 16, 16
    schedule = [growth_at(s, phase, levels) for s in range(5 * phase + 3)]
    assert schedule[0] == (0, 1.0) and schedule[phase - 1] == (0, 1.0)
    assert [a for st, a in schedule[phase:2 * phase]] == [0.25, 0.5, 0.75, 1.0]
    assert all(st == 1 for st, _ in schedule[phase:3 * phase])
    assert schedule[3 * phase] == (2, 0.25)
    assert all(g == (2, 1.0) for g in schedule[4 * phase:])


def test_progan_real_images_are_pooled_and_faded_like_the_generator():
    from ganrt.train.progan import images_at

    x = torch.randn(2, 1, 16, 16)
    assert images_at(x, 2, 1.0) is x
    torch.testing.assert_close(images_at(x, 0, 1.0), torch.nn.functional.avg_pool2d(x, 4))
    start = images_at(x, 1, 0.0)  # fade-in start: the 4x4 image upsampled to 8x8
    torch.testing.assert_close(start[:, :, ::2, ::2], torch.nn.functional.avg_pool2d(x, 4))
    torch.testing.assert_close(images_at(x, 1, 1.0), torch.nn.functional.avg_pool2d(x, 2))


def test_progan_trainer_keeps_its_schedule_across_resume(kit):
    trainer = _trainer("progan", kit, steps=10)
    state = trainer.extra_state()
    resumed = _trainer("progan", kit, steps=50)
    resumed.load_extra_state(state)
    assert resumed.phase_steps == trainer.phase_steps
    assert (resumed.G.stage, resumed.D.stage, resumed.G_ema.stage) == (trainer.stage,) * 3


def test_vae_kl_weight_warms_up_linearly_then_stays_at_one(kit):
    trainer = _trainer("vae", kit, steps=40)
    weights = [trainer.kl_weight(s) for s in range(40)]
    assert weights[0] == pytest.approx(0.1) and weights[9] == 1.0 and weights[-1] == 1.0
    assert all(a < b for a, b in zip(weights[:9], weights[1:10], strict=True))
    assert "D" not in trainer.optimizers and "VAE" in trainer.optimizers


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 small RGB PNGs in 3 class subfolders: a labelled image-folder dataset."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for k in range(3):
        (root / f"class{k}").mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{k}" / f"{i}.png")
    return root


@pytest.mark.parametrize("arch", names())
def test_trains_through_the_loop_on_an_image_folder_and_the_checkpoint_rebuilds(arch, kit, image_folder, tmp_path):
    from ganrt.checkpoint import load_generator, read_checkpoint
    from ganrt.train.config import TrainConfig
    from ganrt.train.loop import train

    res = min(get(arch).supported_resolutions)
    config = TrainConfig(arch=arch, dataset=str(image_folder), resolution=res, steps=2, batch_size=4, latent_dim=16,
                         arch_kwargs=dict(kit.TINY_KWARGS[arch]), sample_every=2, checkpoint_every=2, log_every=1,
                         threads=1)
    result = train(config, tmp_path / "run", progress=False)
    assert result.samples is not None and result.samples.is_file()
    g, spec = load_generator(result.checkpoint)
    assert spec.num_classes == 3 and spec.channels == 3 and spec.arch == arch
    assert read_checkpoint(result.checkpoint).has("D")  # a VAE's encoder, every other family's D
    with torch.no_grad():
        x = g(torch.randn(2, 16), torch.tensor([0, 2]))
    assert x.shape == (2, 3, res, res) and torch.isfinite(x).all()
