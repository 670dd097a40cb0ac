"""`ganrt convert-inception-weights`: the published .pth (a pickle) becomes a safetensors file through torch's
weights-only loader, and the extractor gives the same features as the model the .pth came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganrt.errors import MetricError
from ganrt.metrics.extractors import get_extractor
from ganrt.metrics.inception import build_fid_inception, convert_weights


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    model = build_fid_inception().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so a missed buffer would show
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_a_converted_pth_gives_the_features_of_its_model(random_model, tmp_path):
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_model.state_dict(), pth)
    out = tmp_path / "inception.safetensors"
    info = convert_weights(pth, out)
    assert info["tensors"] == len(random_model.state_dict()) and len(info["sha256"]) == 64
    ext = get_extractor("inception", inception_weights=out)
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    features, _ = ext.extract(images, batch_size=3)
    with torch.no_grad():
        from ganrt.metrics.extractors import to_float_nchw

        x = to_float_nchw(torch.from_numpy(images), 3, 299, antialias=False) * 2 - 1
        expected, _ = random_model(x)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_num_batches_tracked_entries_are_optional(random_model, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in random_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no-counters.safetensors"
    save_file(state, str(path))
    a = get_extractor("inception", inception_weights=path)
    images = np.full((1, 16, 16, 3), 128, np.uint8)
    pth = tmp_path / "w.pth"
    torch.save(state, pth)
    convert_weights(pth, tmp_path / "converted.safetensors")
    b = get_extractor("inception", inception_weights=tmp_path / "converted.safetensors")
    np.testing.assert_array_equal(a.extract(images)[0], b.extract(images)[0])


class NotATensor:
    pass


def test_a_pickle_with_objects_is_refused_and_nothing_is_written(tmp_path):
    pth = tmp_path / "evil.pth"
    torch.save({"conv.weight": NotATensor()}, pth)
    out = tmp_path / "out.safetensors"
    with pytest.raises(MetricError, match="weights_only=True"):
        convert_weights(pth, out)
    assert not out.exists()


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    pth = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, pth)
    with pytest.raises(MetricError, match=r"missing: .*wrong shape: fc.weight"):
        convert_weights(pth, tmp_path / "out.safetensors")


def test_the_command_converts_and_reports_errors_in_one_line(random_model, tmp_path):
    from click.testing import CliRunner

    from ganrt.cli import cli

    pth = tmp_path / "w.pth"
    torch.save(random_model.state_dict(), pth)
    ok = CliRunner().invoke(cli, ["convert-inception-weights", str(pth), str(tmp_path / "w.safetensors")])
    assert ok.exit_code == 0 and "--inception-weights" in ok.output
    bad = tmp_path / "bad.pth"
    torch.save({"x": NotATensor()}, bad)
    res = CliRunner().invoke(cli, ["convert-inception-weights", str(bad), str(tmp_path / "b.safetensors")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "ganrt: error:" in res.output
