"""Shared fixtures: a tiny conditional DCGAN spec, a random-init checkpoint of it (no training), a version of it
with visible contrast, and a real fp32 bundle of that (exported once per session)."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Tests are small; more threads only add contention on a 2-core CI machine.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_spec():
    from ganrt.spec import GeneratorSpec

    return GeneratorSpec(arch="dcgan", latent_dim=16, channels=1, height=32, width=32, num_classes=10,
                         arch_kwargs={"width": 16, "embed_dim": 8})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_spec):
    """A checkpoint written through the real format, weights random (seeded), EMA = G."""
    from ganrt.checkpoint import Checkpoint, save_checkpoint
    from ganrt.models import build_generator, get

    torch.manual_seed(0)
    g = build_generator(tiny_spec)
    d = get("dcgan").build_discriminator(tiny_spec)
    # give BatchNorm non-trivial running stats so eval mode differs from identity
    g.train()
    with torch.no_grad():
        g(torch.randn(32, tiny_spec.latent_dim), torch.randint(0, 10, (32,)))
    tensors = {f"G.{k}": v for k, v in g.state_dict().items()}
    tensors.update({f"G_ema.{k}": v for k, v in g.state_dict().items()})
    tensors.update({f"D.{k}": v for k, v in d.state_dict().items()})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, Checkpoint(spec=tiny_spec, tensors=tensors, step=0,
                                     dataset={"name": "random-init"}))
    return path


def has_cuda() -> bool:
    return bool(torch.cuda.is_available())


def has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and has_cuda()


@pytest.fixture(scope="session")
def contrast_checkpoint(tmp_path_factory, tiny_checkpoint):
    """tiny_checkpoint with its last layer's weights scaled x60: a random-init generator's images are
    otherwise nearly flat (std < 1 level), which would make a one-level parity test prove nothing."""
    import torch

    from ganrt.checkpoint import Checkpoint, load_generator, save_checkpoint

    g, spec = load_generator(tiny_checkpoint)
    last = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last.weight.mul_(60.0)
    tensors = {f"G_ema.{k}": v for k, v in g.state_dict().items()}
    path = tmp_path_factory.mktemp("rt-ckpt") / "contrast.safetensors"
    save_checkpoint(path, Checkpoint(spec=spec, tensors=tensors))
    return path


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, contrast_checkpoint):
    from ganrt.export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("rt") / "bundle"
    export_checkpoint(contrast_checkpoint, out, options=ExportOptions(precisions=("fp32",), max_batch=64))
    return out


@pytest.fixture(scope="session")
def tool():
    """tool(name) -> the module tools/<name>.py (the repository's scripts: not a package, not installed)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "tools"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))  # as when a script runs: a tool imports its siblings by name

    def load(name: str):
        key = f"ganrt_tools_{name}"
        if key not in sys.modules:
            spec = importlib.util.spec_from_file_location(key, folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return sys.modules[key]

    return load


def commit_bundle(path, spec, files: dict, graph: dict | None = None, source: dict | None = None):
    """Write a bundle through BundleWriter, as export does: ``files`` = {artifact: (bytes, manifest entry)}."""
    from ganrt.bundle import BundleWriter, Staged

    with BundleWriter(path, spec) as w:
        staged = []
        for name, (data, entry) in files.items():
            src = w.stage / f"{name}.bin"
            src.write_bytes(data)
            staged.append(Staged(name, src, {"precision": None, "made_by": {}, "parity": None, "passed": None,
                                             **entry}))
        return w.commit(graph=graph or {}, source=source or {}, staged=staged)


@pytest.fixture(scope="session")
def write_bundle():
    """The function ``commit_bundle(path, spec, files, graph=None, source=None) -> Bundle``."""
    return commit_bundle


# -- every bundle the suite exports lints clean for TensorRT -----------------------------------------------------
def pytest_configure(config):
    """Every bundle ganrt.export.export returns in this process (the CLI and export_checkpoint call it) must lint
    clean for TensorRT as it is written: every graph ganrt exports is one TensorRT is documented to take
    (ganrt.export.tensorrt_lint)."""
    import ganrt.export
    from ganrt.export import pipeline
    from ganrt.export.tensorrt_lint import lint_bundle, verdict

    original = pipeline.export

    def export(*args, **kwargs):
        result = original(*args, **kwargs)
        report = lint_bundle(result.bundle)
        assert report["errors"] == 0, f"bundle {result.bundle.path}: {verdict(report)}"
        return result

    pipeline.export = ganrt.export.export = export


# The most common generator there is: the PyTorch DCGAN tutorial's (ganrt's own writing of that well-known
# architecture, with the tutorial's initialisation), written as a user's package so a bundle can name its
# factory. It takes z as [B, nz, 1, 1] (spec z_layout="nchw"). ngf is 16 rather than 64 to keep the suite fast.
DCGAN_TUTORIAL = '''
import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=16, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):  # x: (B, nz, 1, 1) -> (B, nc, 64, 64)
        return self.main(x)


def weights_init(m):  # the tutorial's
    if isinstance(m, nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def make_generator():
    """Random weights, BatchNorm statistics from a few training-mode batches, and the last layer scaled so the
    images span most of [-1, 1] (a random-init generator's are otherwise nearly flat: a parity test of flat
    images would prove little)."""
    torch.manual_seed(0)
    g = Generator()
    g.apply(weights_init)
    g.train()
    with torch.no_grad():
        for _ in range(4):
            g(torch.randn(32, 100, 1, 1))
        g.eval()
        last = g.main[-2]
        last.weight.mul_(1.0 / g(torch.randn(32, 100, 1, 1)).std())  # tanh's input about unit spread
    return g
'''


@pytest.fixture(scope="session")
def dcgan_tutorial(tmp_path_factory):
    """(the module, its factory path, its GeneratorSpec): the tutorial's generator as a user brings it."""
    import sys

    from ganrt.spec import GeneratorSpec

    folder = tmp_path_factory.mktemp("dcgan-tutorial")
    (folder / "ganrt_test_dcgan_tutorial.py").write_text(DCGAN_TUTORIAL)
    sys.path.insert(0, str(folder))
    from ganrt.models import load_factory

    factory = "ganrt_test_dcgan_tutorial:make_generator"
    spec = GeneratorSpec(factory=factory, latent_dim=100, channels=3, height=64, width=64, z_layout="nchw")
    return load_factory(factory)(), factory, spec


@pytest.fixture(scope="session")
def dcgan_tutorial_bundle(tmp_path_factory, dcgan_tutorial):
    """The tutorial DCGAN exported with every CPU precision, max batch 64: (ExportResult, the module)."""
    from ganrt.export import ExportOptions, export

    module, _, spec = dcgan_tutorial
    out = tmp_path_factory.mktemp("dcgan-tutorial-bundle") / "bundle"
    result = export(module, out, spec=spec, options=ExportOptions(
        precisions=("fp32", "fp16", "int8", "bf16"), openvino_int8=True, openvino_calibration_size=32,
        calibration_size=32, max_batch=64))
    return result, module
