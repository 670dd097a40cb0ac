"""Tiny configurations of every registered architecture, shared by the model, export-parity and training
smoke tests (widths 8-16, 16x16 images, so every test stays in CPU seconds)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

# arch -> generator arch_kwargs of its tiny config. test_registry_meta.py fails when a registered
# architecture has no entry here.
TINY_KWARGS: dict[str, dict] = {
    "dcgan": {"width": 8, "embed_dim": 8},
    "stylegan": {"w_dim": 16, "mapping_layers": 2, "width": 8, "max_width": 16, "embed_dim": 8},
    "biggan": {"width": 8, "max_width": 16, "shared_dim": 8, "attn_resolution": 8},
    "progan": {"width": 8, "max_width": 16, "embed_dim": 8},
    "vae": {"width": 8, "max_width": 16, "embed_dim": 8},
}
RESOLUTION = 16
LATENT_DIM = 16
NUM_CLASSES = 10


def tiny_spec(arch: str, conditional: bool = True, channels: int = 1):
    from ganrt.models import get
    from ganrt.spec import GeneratorSpec

    if arch not in TINY_KWARGS:
        pytest.fail(f"architecture {arch!r} has no tiny config in tests/models/conftest.py TINY_KWARGS")
    family = get(arch)
    return GeneratorSpec(arch=arch, latent_dim=LATENT_DIM, channels=channels, height=RESOLUTION, width=RESOLUTION,
                         num_classes=NUM_CLASSES if conditional and family.supports_conditional else 0,
                         has_truncation=family.has_truncation, arch_kwargs=dict(TINY_KWARGS[arch]))


def exercised_generator(spec, seed: int = 0):
    """A generator whose every path matters: a few train-mode passes (BatchNorm statistics, StyleGAN's
    w_avg) and the parameters that start at zero (attention gamma, noise strengths) set non-zero. Eval mode."""
    from ganrt.models import build_generator

    torch.manual_seed(seed)
    g = build_generator(spec)
    g.train()
    with torch.no_grad():
        for _ in range(3):
            labels = torch.randint(0, spec.num_classes, (8,)) if spec.num_classes else None
            g(torch.randn(8, spec.latent_dim), labels)
        for p in g.parameters():
            if p.abs().sum() == 0:
                p.add_(torch.randn_like(p) * 0.5)
    return g.eval()


def random_inputs(spec, batch: int, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inputs = {"z": torch.randn(batch, spec.latent_dim, generator=gen)}
    if spec.num_classes:
        inputs["labels"] = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    if spec.has_truncation:
        inputs["truncation"] = torch.rand(batch, generator=gen) * 1.5
    return inputs


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (test modules cannot import conftest
    under --import-mode=importlib)."""

    TINY_KWARGS = TINY_KWARGS
    RESOLUTION = RESOLUTION
    tiny_spec = staticmethod(tiny_spec)
    exercised_generator = staticmethod(exercised_generator)
    random_inputs = staticmethod(random_inputs)


@pytest.fixture
def kit():
    return Kit
