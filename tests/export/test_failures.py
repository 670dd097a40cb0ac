"""Failure paths: NaN generators, wrong specs, unexportable graphs, failed parity, tampered and reused bundles."""

from __future__ import annotations

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class _NaNGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8 * 8)

    def forward(self, z):
        x = self.fc(z).view(-1, 1, 8, 8)
        return torch.tanh(x) * torch.log(x - 1e3)  # log of negatives: NaN


class _SmallGenerator(nn.Module):
    def __init__(self, latent_dim: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(latent_dim, 8 * 8)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 1, 8, 8)


class _DataDependent(_SmallGenerator):
    def forward(self, z):
        x = self.fc(z)
        if x.sum() > 0:  # Python control flow on tensor values: no graph can represent this trace
            x = x * 2
        return torch.tanh(x).view(-1, 1, 8, 8)


def _spec(**kw):
    from ganrt.spec import GeneratorSpec

    base = dict(latent_dim=4, channels=1, height=8, width=8)  # a user's module: its I/O is enough
    return GeneratorSpec(**{**base, **kw})


def test_generator_returning_nan_is_refused(tmp_path):
    from ganrt.errors import ExportError
    from ganrt.export import export

    with pytest.raises(ExportError, match=r"NaN/Inf values .* must return finite images"):
        export(_NaNGenerator(), tmp_path / "b", spec=_spec())
    assert not (tmp_path / "b").exists()


def test_wrong_latent_size_names_both_shapes(tmp_path):
    from ganrt.errors import SpecError
    from ganrt.export import export

    with pytest.raises(SpecError, match=r"z \[3, 7\].*fix latent_dim"):
        export(_SmallGenerator(latent_dim=4), tmp_path / "b", spec=_spec(latent_dim=7))


def test_wrong_image_shape_names_both_shapes(tmp_path):
    from ganrt.errors import SpecError
    from ganrt.export import export

    with pytest.raises(SpecError, match=r"returns \[3, 1, 8, 8\] but the spec says images \[3, 3, 16, 16\]"):
        export(_SmallGenerator(), tmp_path / "b", spec=_spec(channels=3, height=16, width=16))


def test_weights_that_do_not_fit_a_registered_arch_are_a_spec_error(tmp_path, tiny_spec):
    from ganrt.errors import SpecError
    from ganrt.export import export

    with pytest.raises(SpecError, match=r"weights do not fit the generator its spec describes \(arch 'dcgan'\)"):
        export(_SmallGenerator(latent_dim=16), tmp_path / "b", spec=tiny_spec)


def test_data_dependent_control_flow_cannot_be_exported(tmp_path):
    from ganrt.errors import ExportError
    from ganrt.export import export

    expected = r"cannot be exported to ONNX: dynamo: .* torchscript: TracerWarning: .*Python boolean"
    with pytest.raises(ExportError, match=expected):
        export(_DataDependent(), tmp_path / "b", spec=_spec())
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []  # no staging left behind


def test_a_failing_precision_is_left_out_and_the_rest_written_strict_writes_nothing(tmp_path):
    from ganrt.bundle import Bundle
    from ganrt.errors import ParityError
    from ganrt.export import ExportOptions, export
    from ganrt.export.verify import Tolerance

    impossible = {"fp16": Tolerance(max_abs_diff=-1)}  # even identical images fail
    options = ExportOptions(precisions=("fp16",), max_batch=2, tolerances=impossible)
    with pytest.raises(ParityError, match=r"strict export: nothing was written.*onnx-fp16 failed its own check "
                                          r"\(max \|diff\| 0 levels > -1\).*without --strict"):
        export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=dataclasses.replace(options, strict=True))
    assert not (tmp_path / "b").exists()

    result = export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=options)
    assert not result.ok and "onnx-fp16" in result.not_shipped and "onnxruntime-fp32" in result.passed
    assert "onnxruntime-fp16" in result.failed  # its variant, recorded failed because its artifact failed
    b = Bundle.open(tmp_path / "b")
    assert "onnx-fp16" not in b.artifacts and not (tmp_path / "b" / "model.fp16.onnx").exists()
    assert b.not_shipped["onnx-fp16"]["failures"] == ["max |diff| 0 levels > -1"]
    assert b.variants["onnxruntime-fp16"]["passed"] is False and b.variants["onnxruntime-fp32"]["passed"] is True
    assert "onnx-fp16 failed its own check" in result.table()

    b = export(_SmallGenerator(), tmp_path / "c", spec=_spec(),
               options=ExportOptions(precisions=("fp16",), max_batch=2, tolerances=impossible,
                                     allow_failed_parity=True)).bundle
    assert b.artifacts["onnx-fp16"]["passed"] is False and b.artifacts["onnx-fp32"]["passed"] is True
    assert b.artifacts["onnx-fp16"]["failures"]


def test_tampered_file_makes_bundle_open_fail(tmp_path):
    from ganrt.bundle import Bundle
    from ganrt.errors import BundleError
    from ganrt.export import ExportOptions, export

    b = export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=ExportOptions(max_batch=2)).bundle
    path = b.artifact_path("onnx-fp32")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.fp32.onnx does not match its recorded sha256"):
        Bundle.open(tmp_path / "b")


def test_reexport_replaces_only_what_it_rebuilds(tmp_path):
    from ganrt.export import ExportOptions, export

    out = tmp_path / "b"
    first = export(_SmallGenerator(), out, spec=_spec(),
                   options=ExportOptions(precisions=("fp16",), max_batch=2)).bundle
    fp16_sha = first.artifacts["onnx-fp16"]["sha256"]
    second = export(_SmallGenerator(), out, spec=_spec(),
                    options=ExportOptions(max_batch=2)).bundle  # fp32 only, same graph I/O
    assert second.artifacts["onnx-fp16"]["sha256"] == fp16_sha  # kept
    third = export(_SmallGenerator(), out, spec=_spec(),
                   options=ExportOptions(max_batch=4)).bundle  # graph changed: the fp16 graph is stale
    assert "onnx-fp16" not in third.artifacts and not (out / "model.fp16.onnx").exists()
    assert json.loads((out / "manifest.json").read_text())["graph"]["max_batch"] == 4


def test_bundle_of_another_generator_is_refused_before_any_work(tmp_path):
    from ganrt.errors import BundleError
    from ganrt.export import ExportOptions, export

    export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=ExportOptions(max_batch=2))
    with pytest.raises(BundleError, match=r"already holds a bundle of another generator"):
        export(_SmallGenerator(latent_dim=5), tmp_path / "b", spec=_spec(latent_dim=5))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"not empty and is not a ganrt bundle"):
        export(_SmallGenerator(), tmp_path / "c", spec=_spec())


def test_bad_options_are_config_errors(tmp_path):
    from ganrt.errors import ConfigError
    from ganrt.export import ExportOptions, export

    with pytest.raises(ConfigError, match=r"precisions must be a non-empty subset"):
        export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=ExportOptions(precisions=("fp8",)))
    with pytest.raises(ConfigError, match=r"max_batch must be an integer >= 1"):
        export(_SmallGenerator(), tmp_path / "b", spec=_spec(), options=ExportOptions(max_batch=0))
