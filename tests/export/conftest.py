"""Helpers for the export tests: tiny generators, among them a user's own package the project never saw."""

from __future__ import annotations

import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# A user's generator: Upsample + Conv, LeakyReLU, InstanceNorm, a class embedding; takes (z, labels).
USER_PACKAGE = textwrap.dedent('''
    import torch
    from torch import nn


    class UpConvGenerator(nn.Module):
        def __init__(self, latent_dim=12, num_classes=5, channels=3, width=8):
            super().__init__()
            self.embed = nn.Embedding(num_classes, latent_dim)
            self.fc = nn.Linear(latent_dim, width * 2 * 4 * 4)
            self.width = width
            self.body = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width * 2, width, 3, padding=1),
                nn.InstanceNorm2d(width, affine=True),
                nn.LeakyReLU(0.2),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(width, width, 3, padding=1),
                nn.InstanceNorm2d(width, affine=True),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, channels, 3, padding=1),
                nn.Tanh(),
            )

        def forward(self, z, labels):
            h = self.fc(z * self.embed(labels))
            return self.body(h.view(-1, self.width * 2, 4, 4))  # (B, C, 16, 16)


    def make_generator():
        torch.manual_seed(3)
        return UpConvGenerator()
''')


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """Write the user's package to a temporary folder on sys.path; returns the factory path."""
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    name = f"my_gans_{tmp_path.name.replace('-', '_')}"
    (pkg / f"{name}.py").write_text(USER_PACKAGE)
    monkeypatch.syspath_prepend(str(pkg))
    yield f"{name}:make_generator"
    sys.modules.pop(name, None)


@pytest.fixture
def user_spec(user_package):
    from ganrt.spec import GeneratorSpec

    return GeneratorSpec(arch="external", factory=user_package, latent_dim=12, num_classes=5, channels=3,
                         height=16, width=16)
