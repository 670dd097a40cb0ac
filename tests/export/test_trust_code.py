"""No code runs from a file unless the caller trusts it; a user's own module runs on every graph backend
without that, and on torch (called exactly as export calls it) with it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

MARKER_LINE = "import os, pathlib; pathlib.Path(os.environ['GANRT_TEST_IMPORTED']).touch()\n"


@pytest.fixture
def marked_package(user_package, tmp_path, monkeypatch):
    """The user's package (a module taking (z, labels)), which leaves a marker file whenever it is imported."""
    import importlib.util

    module = user_package.split(":")[0]
    path = importlib.util.find_spec(module).origin
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(MARKER_LINE + text)
    marker = tmp_path / "imported"
    monkeypatch.setenv("GANRT_TEST_IMPORTED", str(marker))
    return user_package, module, marker


def _forget(module, marker):
    """As a fresh process: the module not imported, no marker."""
    sys.modules.pop(module, None)
    marker.unlink(missing_ok=True)


def _run(*args):
    from ganrt.cli import cli

    return CliRunner().invoke(cli, list(map(str, args)))


def _user_checkpoint(factory, path):
    from ganrt.checkpoint import Checkpoint, save_checkpoint
    from ganrt.models import load_factory
    from ganrt.spec import GeneratorSpec

    spec = GeneratorSpec(factory=factory, latent_dim=12, num_classes=5, channels=3, height=16, width=16)
    g = load_factory(factory)()
    save_checkpoint(path, Checkpoint(spec=spec, tensors={f"G.{k}": v for k, v in g.state_dict().items()}))
    return path


def test_export_of_a_checkpoint_naming_code_needs_trust_code(marked_package, tmp_path):
    """On main, `ganrt export CKPT` imported the module the checkpoint's spec named and called it."""
    factory, module, marker = marked_package
    ckpt = _user_checkpoint(factory, tmp_path / "user.safetensors")
    _forget(module, marker)

    refused = _run("export", ckpt, "--out", tmp_path / "b", "--max-batch", 2, "--no-cpu-rewrite")
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "imports and runs the code its spec names" in refused.output and "--trust-code" in refused.output
    assert not marker.exists() and module not in sys.modules and not (tmp_path / "b").exists()

    trusted = _run("export", ckpt, "--out", tmp_path / "b", "--max-batch", 2, "--no-cpu-rewrite", "--trust-code")
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists()


@pytest.fixture
def user_bundle(marked_package, tmp_path):
    """A bundle of the user's module whose spec names its factory; afterwards as in a fresh process."""
    from ganrt.export import ExportOptions, export
    from ganrt.models import load_factory
    from ganrt.spec import GeneratorSpec

    factory, module, marker = marked_package
    spec = GeneratorSpec(factory=factory, latent_dim=12, num_classes=5, channels=3, height=16, width=16)
    export(load_factory(factory)(), tmp_path / "b", spec=spec,
           options=ExportOptions(max_batch=4, cpu_rewrite=False))
    _forget(module, marker)
    return tmp_path / "b", marker


def test_a_users_module_runs_its_graphs_without_trust_and_torch_only_with_it(user_bundle):
    """On main the torch backend called the module with (z, labels, truncation): TypeError."""
    from ganrt.errors import BackendUnavailable
    from ganrt.runtime import load

    path, marker = user_bundle
    with load(path, threads=1) as gen:  # auto: a graph backend, no code imported
        assert gen.backend != "torch"
        graph = gen.generate(seeds=range(4), labels=[0, 1, 2, 3])
    with pytest.raises(BackendUnavailable, match=r"importing its code .*trust_code=True \(CLI: --trust-code\)"):
        load(path, backend="torch")
    assert not marker.exists()

    with load(path, backend="torch", threads=1, trust_code=True) as gen:
        reference = gen.generate(seeds=range(4), labels=[0, 1, 2, 3])
    assert marker.exists()
    assert reference.shape == (4, 16, 16, 3) and np.abs(reference.astype(int) - graph).max() <= 1


def test_eval_and_generate_of_a_users_bundle(user_bundle, tmp_path):
    path, marker = user_bundle
    refused = _run("eval", path, "--extractor", "pixels", "--n", 10, "--kid-subsets", 2)  # the torch reference
    assert refused.exit_code == 2 and "--trust-code" in refused.output and not marker.exists()
    refused = _run("generate", path, "--backend", "torch", "--seeds", "0-1", "--out", tmp_path / "t")
    assert refused.exit_code == 2 and "--trust-code" in refused.output and not marker.exists()
    ok = _run("generate", path, "--seeds", "0-1", "--out", tmp_path / "g")  # auto: a graph backend
    assert ok.exit_code == 0, ok.output
    assert not marker.exists()
    ok = _run("generate", path, "--backend", "torch", "--trust-code", "--seeds", "0-1", "--out", tmp_path / "t")
    assert ok.exit_code == 0, ok.output


def test_a_module_with_no_factory_is_a_bundle_of_graphs(tmp_path):
    from ganrt.errors import BackendUnavailable, CheckpointError
    from ganrt.export import ExportOptions, export
    from ganrt.runtime import load
    from ganrt.spec import GeneratorSpec

    class Tiny(torch.nn.Module):  # takes z only
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 64)

        def forward(self, z):
            return torch.tanh(self.fc(z)).view(-1, 1, 8, 8)

    spec = GeneratorSpec(latent_dim=4, channels=1, height=8, width=8)
    bundle = export(Tiny(), tmp_path / "b", spec=spec, options=ExportOptions(max_batch=2, cpu_rewrite=False)).bundle
    assert bundle.spec.arch == "external" and bundle.spec.factory is None
    with load(tmp_path / "b", threads=1) as gen:
        assert gen.generate(seeds=[0, 1]).shape == (2, 8, 8, 1)
    with pytest.raises(BackendUnavailable, match="names no factory"):
        load(tmp_path / "b", backend="torch", trust_code=True)
    from ganrt.checkpoint import load_generator

    with pytest.raises(CheckpointError, match="no factory recorded"):
        load_generator(bundle.artifact_path("weights"), trust_code=True)


def test_bench_times_the_torch_variants_of_a_users_bundle_only_with_trust(user_bundle):
    """bench's candidate list once ignored --trust-code: torch was never timed, no ratio to torch eager."""
    from ganrt.benchmarks.harness import candidate_variants
    from ganrt.bundle import Bundle

    path, marker = user_bundle
    manifest = Bundle.open(path).to_dict()
    untrusted = {c.variant for c in candidate_variants(manifest)[0]}
    trusted = {c.variant for c in candidate_variants(manifest, trust_code=True)[0]}
    assert "torch-fp32" not in untrusted and "onnxruntime-fp32" in untrusted
    assert trusted - untrusted >= {"torch-fp32"}
    assert not marker.exists()  # listing candidates imports nothing
