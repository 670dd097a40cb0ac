"""Generators people bring, as they are: each exports through the bring-your-own path and runs on every CPU backend.

pytorch-pretrained-biggan's BigGAN (built from a BigGANConfig with random weights, never downloaded: it takes a
one-hot class vector and its truncation as a Python number), a generator taking (z, c) with c one-hot, one that
returns [0, 1] and one that returns NHWC images; the spec says how each takes and returns the graph's I/O
(ganrt.spec), no wrapper needed. A module that needs such a form and lacks it is refused with the form to set.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

PACKAGE = textwrap.dedent('''
    import torch
    from torch import nn


    class OneHot(nn.Module):
        """(z, c) with c a one-hot float vector, as many conditional GANs are written."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16 + 10, 16 * 4 * 4)
            self.body = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),
                                      nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.Tanh())

        def forward(self, z, c):
            return self.body(self.fc(torch.cat([z, c], dim=1)).view(-1, 16, 4, 4))  # (B, 3, 16, 16)


    class UnitRange(nn.Module):
        """Images in [0, 1] (a sigmoid output)."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 8 * 4 * 4)
            self.body = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                      nn.Upsample(scale_factor=2), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid())

        def forward(self, z):
            return self.body(self.fc(z).view(-1, 8, 4, 4) * 3.0)  # (B, 1, 16, 16)


    class ChannelsLast(nn.Module):
        """Images as (B, H, W, C)."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 8 * 4 * 4)
            self.body = nn.Sequential(nn.ConvTranspose2d(8, 8, 4, 2, 1), nn.ReLU(),
                                      nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.Tanh())

        def forward(self, z):
            return self.body(self.fc(z).view(-1, 8, 4, 4)).permute(0, 2, 3, 1)  # (B, 16, 16, 3)


    def _contrast(g, last):
        with torch.no_grad():
            last.weight.mul_(4.0)
        return g.eval()


    def one_hot():
        torch.manual_seed(1)
        g = OneHot()
        return _contrast(g, g.body[2])


    def unit_range():
        torch.manual_seed(2)
        return UnitRange().eval()


    def channels_last():
        torch.manual_seed(3)
        g = ChannelsLast()
        return _contrast(g, g.body[2])


    def biggan():
        """pytorch-pretrained-biggan's BigGAN, 32x32, random weights, spectral-norm vectors iterated as training
        leaves them (a few training-mode passes), batch-norm statistics as the TF Hub conversion stores them
        (one per truncation step)."""
        from pytorch_pretrained_biggan import BigGAN, BigGANConfig

        torch.manual_seed(4)
        config = BigGANConfig(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=10,
                              layers=[(False, 16, 16), (True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
                              attention_layer_position=2)
        g = BigGAN(config)
        with torch.no_grad():
            g.generator.bn.weight.fill_(1.0)  # torch.Tensor(n) in its __init__: uninitialised memory
            g.generator.bn.bias.zero_()
            for m in g.modules():
                if hasattr(m, "running_vars"):
                    m.running_means.normal_(0.0, 0.1)
                    m.running_vars.uniform_(0.5, 1.5)
            g.train()
            for _ in range(3):
                g(torch.randn(4, 16), torch.nn.functional.one_hot(torch.randint(0, 10, (4,)), 10).float(), 0.4)
        return g.eval()
''')

CASES = {  # factory -> how the spec says the module takes and returns the graph's I/O
    "one_hot": dict(latent_dim=16, num_classes=10, channels=3, height=16, width=16, labels_as="one-hot"),
    "unit_range": dict(latent_dim=16, channels=1, height=16, width=16, output_range=(0.0, 1.0)),
    "channels_last": dict(latent_dim=16, channels=3, height=16, width=16, output_layout="nhwc"),
    "biggan": dict(latent_dim=16, num_classes=10, channels=3, height=32, width=32, labels_as="one-hot",
                   fixed_truncation=0.4),
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brought")
    (folder / "ganrt_test_brought.py").write_text(PACKAGE)
    sys.path.insert(0, str(folder))
    yield "ganrt_test_brought"
    sys.path.remove(str(folder))
    sys.modules.pop("ganrt_test_brought", None)


def _spec(package, name, **changes):
    from ganrt.spec import GeneratorSpec

    return GeneratorSpec(factory=f"{package}:{name}", **{**CASES[name], **changes})


def _make(package, name):
    if name == "biggan":
        pytest.importorskip("pytorch_pretrained_biggan")
    from ganrt.models import load_factory

    return load_factory(f"{package}:{name}")()


@pytest.mark.parametrize("name", list(CASES))
def test_a_brought_generator_exports_and_runs_on_every_cpu_backend(package, name, tmp_path):
    from ganrt.export import ExportOptions, export
    from ganrt.export.graph import GraphModule, prepare_generator, sample_inputs
    from ganrt.export.verify import TOLERANCES
    from ganrt.parity import image_parity
    from ganrt.runtime import load

    module = _make(package, name)
    spec = _spec(package, name)
    result = export(module, tmp_path / "b", spec=spec,
                    options=ExportOptions(precisions=("fp32", "fp16", "bf16"), max_batch=4))
    assert result.ok, result.table()
    every_cpu_backend = {"torch-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "openvino-fp32", "openvino-bf16"}
    assert every_cpu_backend <= set(result.passed)
    if spec.labels_as == "one-hot":
        # the one-hot vector is a Cast to float, which the fp16 converter once left at fp32 before an fp16 Gemm
        # (BigGAN's graph then failed onnx.checker: 'Gemm: B has inconsistent type tensor(float16)')
        kept = result.bundle.artifacts["onnx-fp16"]["made_by"]["kept_nodes"]
        assert any(k["reason"] == "cast-to-float" for k in kept)

    feeds = sample_inputs(spec, list(range(40, 45)))
    with torch.no_grad():
        reference, raw = GraphModule(prepare_generator(module), spec).eval()(*map(torch.from_numpy, feeds.values()))
    assert reference.float().std() > 10, "near-flat reference images would prove little"
    labels = feeds.get("labels")
    for backend in ("torch", "onnxruntime", "openvino"):
        with load(tmp_path / "b", backend=backend, precision="fp32", threads=1, trust_code=True) as gen:
            images = gen.generate(z=feeds["z"], labels=labels)  # 5 images: split into 4 + 1 (max batch 4)
        assert images.shape == (5, spec.height, spec.width, spec.channels)
        assert not TOLERANCES["fp32"].failures(image_parity(reference.numpy(), images)), backend


@pytest.mark.parametrize("name, missing, advice", [
    ("one_hot", {"labels_as": "index"}, r"labels_as='one-hot'\) \(CLI: --labels-as one-hot\)"),
    ("channels_last", {"output_layout": "nchw"}, r"returns \[3, 16, 16, 3\].*output_layout='nhwc'"),
    ("biggan", {"labels_as": "index", "fixed_truncation": None},
     r"labels_as='one-hot', fixed_truncation=<the truncation to draw at.*--fixed-truncation 0.7"),
    ("biggan", {"fixed_truncation": None, "has_truncation": True},
     r"has_truncation=False, fixed_truncation=.*--no-truncation --fixed-truncation"),
])
def test_a_module_called_in_a_form_it_does_not_take_is_refused_with_the_form_to_set(package, name, missing, advice,
                                                                                   tmp_path):
    from ganrt.errors import SpecError
    from ganrt.export import export

    with pytest.raises(SpecError, match=advice):
        export(_make(package, name), tmp_path / "b", spec=_spec(package, name, **missing))
    assert not (tmp_path / "b").exists()


def test_the_dcgan_tutorials_generator_without_its_z_layout_is_told_to_set_it(dcgan_tutorial, tmp_path):
    from ganrt.errors import SpecError
    from ganrt.export import export

    module, _, spec = dcgan_tutorial
    with pytest.raises(SpecError, match=r"z_layout='nchw'\) \(CLI: --z-layout nchw\)"):
        export(module, tmp_path / "b", spec=spec.replace(z_layout="flat"))
