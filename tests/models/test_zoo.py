"""Behaviour of the zoo's building blocks and families (torch only, tiny configs)."""

from __future__ import annotations

import pytest

from ganrt.models import build_generator, get, names

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _labels(spec, b):
    return torch.randint(0, spec.num_classes, (b,)) if spec.num_classes else None


# --- every family ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("arch", names())
def test_generator_and_discriminator_shapes(arch, conditional, kit):
    spec = kit.tiny_spec(arch, conditional=conditional, channels=3)
    family = get(arch)
    g = build_generator(spec).eval()
    d = family.build_discriminator(spec)
    b = 5  # not a multiple of the minibatch-stddev group
    with torch.no_grad():
        x = g(torch.randn(b, spec.latent_dim), _labels(spec, b))
        assert x.shape == (b, 3, spec.height, spec.width)
        assert x.min() >= -1.0 and x.max() <= 1.0
        out = d(x, _labels(spec, b))
    if arch == "vae":  # the D slot of a VAE holds its encoder
        mu, logvar = out
        assert mu.shape == logvar.shape == (b, spec.latent_dim)
    else:
        logits, feats = d(x, _labels(spec, b), return_features=True)
        assert out.shape == logits.shape == (b,)
        assert feats.ndim == 2 and feats.shape[0] == b


@pytest.mark.parametrize("arch", names())
def test_generator_rebuilds_from_checkpoint_json_alone(arch, kit, tmp_path):
    from ganrt.checkpoint import Checkpoint, load_generator, read_metadata, save_checkpoint
    from ganrt.spec import GeneratorSpec

    spec = kit.tiny_spec(arch)
    g = kit.exercised_generator(spec, seed=3)
    d = get(arch).build_discriminator(spec)
    tensors = {f"G_ema.{k}": v for k, v in g.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in d.state_dict().items()})
    path = save_checkpoint(tmp_path / "c.safetensors", Checkpoint(spec=spec, tensors=tensors))
    assert GeneratorSpec.from_dict(read_metadata(path)["spec"]) == spec
    g2, spec2 = load_generator(path)
    inputs = kit.random_inputs(spec, 4)
    with torch.no_grad():
        torch.testing.assert_close(g2(*inputs.values()), g(*inputs.values()))


@pytest.mark.parametrize("arch", [a for a in names() if a != "dcgan"])
def test_unknown_arch_kwargs_are_rejected(arch, kit):
    spec = kit.tiny_spec(arch).replace(arch_kwargs={**kit.TINY_KWARGS[arch], "widht": 8})
    with pytest.raises(ValueError, match="unknown .* arch_kwargs"):
        build_generator(spec)


@pytest.mark.parametrize("arch", ["dcgan", "stylegan", "biggan", "progan"])
def test_discriminator_minibatch_discrimination_option(arch, kit):
    from ganrt.models.layers import MinibatchDiscrimination

    spec = kit.tiny_spec(arch)
    d = get(arch).build_discriminator(spec, minibatch_discrimination=True)
    assert any(isinstance(m, MinibatchDiscrimination) for m in d.modules())
    x = torch.randn(6, 1, spec.height, spec.width)
    assert d(x, _labels(spec, 6)).shape == (6,)


# --- layers --------------------------------------------------------------------------------------------------

def test_minibatch_discrimination_sees_identical_samples():
    from ganrt.models.layers import MinibatchDiscrimination

    torch.manual_seed(0)
    layer = MinibatchDiscrimination(12, num_kernels=5, kernel_dim=3)
    same = layer(torch.ones(4, 12))
    assert same.shape == (4, 17)
    torch.testing.assert_close(same[:, 12:], torch.full((4, 5), 3.0))  # exp(0) for each of the 3 others
    spread = layer(torch.randn(4, 12) * 10)
    assert (spread[:, 12:] < 3.0).all()


def test_equalized_linear_scales_at_runtime_and_lr_mul():
    from ganrt.models.layers import EqualizedLinear

    fc = EqualizedLinear(64, 8, lr_mul=0.01, bias_init=1.0)
    assert fc.weight.std() > 10  # stored N(0,1)/lr_mul
    torch.testing.assert_close(fc(torch.zeros(2, 64)), torch.ones(2, 8))
    y = fc(torch.randn(4096, 64))
    assert 0.8 < (y - 1).std() < 1.2  # unit-variance output from unit-variance input


# --- stylegan ------------------------------------------------------------------------------------------------

def test_modulated_conv_equals_per_sample_conv_with_modulated_demodulated_weight():
    from ganrt.models.stylegan import modulated_conv2d

    torch.manual_seed(0)
    x, w, s = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, w, s, demodulate=True, padding=1)
    for i in range(3):
        wi = w * s[i][None, :, None, None]
        wi = wi * torch.rsqrt(wi.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], wi, padding=1), atol=1e-5, rtol=1e-4)


def test_stylegan_truncation_psi_zero_gives_the_w_avg_image_and_one_is_identity(kit):
    spec = kit.tiny_spec("stylegan")
    g = kit.exercised_generator(spec)
    assert g.w_avg.abs().sum() > 0, "w_avg must be tracked in training mode"
    z, labels = torch.randn(4, spec.latent_dim), torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        at_zero = g(z, labels, torch.zeros(4))
        torch.testing.assert_close(at_zero, at_zero[:1].expand(4, -1, -1, -1))
        torch.testing.assert_close(g(z, labels, torch.ones(4)), g(z, labels))
        assert not torch.allclose(g(z, labels, torch.full((4,), 0.5)), g(z, labels))


def test_stylegan_is_deterministic_in_eval_and_noisy_in_training(kit):
    spec = kit.tiny_spec("stylegan", conditional=False)
    g = kit.exercised_generator(spec)
    z = torch.randn(2, spec.latent_dim)
    with torch.no_grad():
        torch.testing.assert_close(g(z), g(z))
        g.train()
        g.mixing_prob = 0.0
        assert not torch.allclose(g(z), g(z))


def test_stylegan_style_mixing_uses_a_second_latent_in_training(kit):
    spec = kit.tiny_spec("stylegan", conditional=False)
    g = kit.exercised_generator(spec).train()
    for layer in g.modules():  # silence the noise so only mixing can change the output
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.zero_()
    z = torch.randn(2, spec.latent_dim)
    with torch.no_grad():
        g.mixing_prob = 0.0
        torch.testing.assert_close(g(z), g(z))
        g.mixing_prob = 1.0
        assert not torch.allclose(g(z), g(z))


# --- biggan --------------------------------------------------------------------------------------------------

def test_biggan_attention_starts_as_identity():
    from ganrt.models.biggan import SelfAttention

    attn = SelfAttention(16).eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(attn(x), x)
    attn.gamma.data.fill_(1.0)
    assert not torch.allclose(attn(x), x)


def test_biggan_removing_spectral_norm_keeps_eval_outputs(kit):
    from ganrt.models.biggan import remove_spectral_norm

    spec = kit.tiny_spec("biggan")
    g = kit.exercised_generator(spec)
    inputs = kit.random_inputs(spec, 3)
    with torch.no_grad():
        before = g(*inputs.values())
        remove_spectral_norm(g)
        assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in g.modules())
        torch.testing.assert_close(g(*inputs.values()), before)


def test_biggan_class_and_latent_chunks_both_condition_the_blocks(kit):
    spec = kit.tiny_spec("biggan")
    g = kit.exercised_generator(spec)
    z = torch.randn(1, spec.latent_dim)
    with torch.no_grad():
        base = g(z, torch.tensor([0]))
        assert not torch.allclose(g(z, torch.tensor([1])), base)
        z2 = z.clone()
        z2[:, -1] += 1.0  # only the last block's chunk
        assert not torch.allclose(g(z2, torch.tensor([0])), base)


def test_biggan_orthogonal_regularization_is_zero_for_orthogonal_rows():
    from ganrt.models.biggan import orthogonal_regularization

    lin = torch.nn.Linear(4, 4, bias=False)
    torch.nn.init.orthogonal_(lin.weight)
    assert orthogonal_regularization(lin, 1.0).item() < 1e-8
    lin.weight.data.fill_(1.0)
    penalty = orthogonal_regularization(lin, 1.0)
    assert penalty.item() == pytest.approx(12 * 16.0)  # 12 off-diagonal entries of value 4
    penalty.backward()
    assert lin.weight.grad.abs().sum() > 0


def test_biggan_rejects_a_latent_too_small_to_split(kit):
    spec = kit.tiny_spec("biggan").replace(latent_dim=2)
    with pytest.raises(ValueError, match="latent_dim 2 is too small"):
        build_generator(spec)


# --- progan --------------------------------------------------------------------------------------------------

def test_progan_built_from_spec_is_full_resolution_and_growth_fades_in(kit):
    spec = kit.tiny_spec("progan", conditional=False)
    g = kit.exercised_generator(spec)
    d = get("progan").build_discriminator(spec)
    assert (g.stage, g.alpha) == (g.levels, 1.0)
    z = torch.randn(2, spec.latent_dim)
    with torch.no_grad():
        g.set_growth(0, 1.0)
        assert g(z).shape == (2, 1, 4, 4)
        d.set_growth(0, 1.0)
        assert d(g(z)).shape == (2,)
        g.set_growth(1, 0.0)  # fade-in start: exactly the upsampled previous level
        d.set_growth(1, 0.0)
        low = g(z)
        assert low.shape == (2, 1, 8, 8)
        torch.testing.assert_close(low[:, :, ::2, ::2], low[:, :, 1::2, 1::2])
        assert d(low).shape == (2,)
        g.set_growth(1, 0.5)
        assert not torch.allclose(g(z), low)
    with pytest.raises(ValueError, match="stage must be in"):
        g.set_growth(g.levels + 1, 1.0)


# --- vae -----------------------------------------------------------------------------------------------------

def test_vae_kl_is_zero_for_the_prior_and_positive_otherwise():
    from ganrt.models.vae import kl_divergence

    zeros = torch.zeros(3, 8)
    torch.testing.assert_close(kl_divergence(zeros, zeros), torch.zeros(3))
    assert (kl_divergence(torch.ones(3, 8), zeros) > 0).all()


def test_biggan_discriminator_spectral_norm_is_a_real_switch_and_on_by_default():
    from torch.nn.utils import parametrize

    from ganrt.models import get
    from ganrt.spec import GeneratorSpec

    spec = GeneratorSpec(arch="biggan", latent_dim=16, channels=1, height=16, width=16, num_classes=3,
                         arch_kwargs={"width": 8, "max_width": 16, "shared_dim": 8, "attn_resolution": 8})
    family = get("biggan")

    def n_parametrized(m):
        return sum(parametrize.is_parametrized(x) for x in m.modules())

    assert n_parametrized(family.build_discriminator(spec)) > 0
    assert n_parametrized(family.build_discriminator(spec, spectral_norm=True)) > 0
    assert n_parametrized(family.build_discriminator(spec, spectral_norm=False)) == 0
