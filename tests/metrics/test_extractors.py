"""Feature extractors: registry validation, domain classifier file format, FID Inception loader, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganrt.errors import MetricError
from ganrt.metrics.extractors import PixelProjection, get_extractor


def _two_class_images(n=256, size=16, seed=0):
    """Class 0: bright left half; class 1: bright right half; plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, size=(n, size, size, 1)).astype(np.uint8)
    for i, y in enumerate(labels):
        half = slice(0, size // 2) if y == 0 else slice(size // 2, size)
        images[i, :, half] += 150
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    from ganrt.metrics.domain import save_classifier, train_classifier

    images, labels = _two_class_images()
    model, config, report = train_classifier(images, labels, 2, epochs=4, batch_size=16, width=4, lr=1e-2)
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    save_classifier(path, model, config, dataset={"name": "two-class", "sha256": "x"}, report=report)
    return path, report


def test_domain_classifier_learns_and_reports_accuracy(classifier_file):
    _, report = classifier_file
    assert report["test_accuracy"] >= 0.9
    assert report["n_test"] > 0 and report["n_train"] + report["n_test"] == 256


def test_domain_classifier_file_has_json_metadata_and_no_pickle(classifier_file):
    from safetensors import safe_open

    path, _ = classifier_file
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["ganrt"])
    assert meta["format"] == "ganrt.classifier" and meta["config"]["num_classes"] == 2
    assert meta["test_accuracy"] == classifier_file[1]["test_accuracy"]


def test_domain_features_are_deterministic_and_batch_size_independent(classifier_file):
    ext = get_extractor("domain", classifier=classifier_file[0])
    images, _ = _two_class_images(n=37, seed=1)
    f1, l1 = ext.extract(images, batch_size=37)
    f2, l2 = ext.extract(images, batch_size=5)
    f3, _ = ext.extract(images, batch_size=37)
    assert f1.shape == (37, ext.feature_dim) and l1.shape == (37, 2) and f1.dtype == np.float64
    np.testing.assert_array_equal(f1, f3)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-5)
    assert ext.metric_names()["fd"] == "FD-domain"


def test_domain_extractor_resizes_and_converts_channels(classifier_file):
    ext = get_extractor("domain", classifier=classifier_file[0])
    rgb = np.random.default_rng(0).integers(0, 255, size=(3, 40, 40, 3)).astype(np.uint8)
    feats, _ = ext.extract(rgb)
    assert feats.shape == (3, ext.feature_dim) and np.isfinite(feats).all()


def test_registry_rejects_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(MetricError, match="unknown feature extractor 'fid'.*domain, inception, pixels"):
        get_extractor("fid")
    with pytest.raises(MetricError, match="needs a classifier file.*train-classifier"):
        get_extractor("domain")
    with pytest.raises(MetricError, match="does not exist.*train-classifier"):
        get_extractor("domain", classifier=tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MetricError, match="not a readable safetensors"):
        get_extractor("domain", classifier=tmp_path / "bad.safetensors")


def test_domain_loader_rejects_a_foreign_safetensors_file(tmp_checkpoint_like):
    with pytest.raises(MetricError, match="not a ganrt classifier"):
        get_extractor("domain", classifier=tmp_checkpoint_like)


@pytest.fixture
def tmp_checkpoint_like(tiny_checkpoint):
    return tiny_checkpoint  # a ganrt checkpoint: valid safetensors, wrong format


def test_inception_needs_a_local_file_and_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GANRT_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(MetricError, match="none given.*pt_inception-2015-12-05-6726825d.pth.*GANRT_INCEPTION_WEIGHTS"):
        get_extractor("inception")
    monkeypatch.setenv("GANRT_INCEPTION_WEIGHTS", str(tmp_path / "missing.safetensors"))
    with pytest.raises(MetricError, match="missing.safetensors does not exist"):
        get_extractor("inception")
    pth = tmp_path / "pt_inception.pth"
    pth.write_bytes(b"\x80\x02pickle")
    with pytest.raises(MetricError, match="pickle-based.*never loads.*safetensors"):
        get_extractor("inception", inception_weights=pth)


def test_inception_loader_validates_the_state_dict(tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"fc.weight": torch.zeros(10, 2048)}, str(bad))
    with pytest.raises(MetricError, match="does not hold the FID Inception-v3 state dict.*missing"):
        get_extractor("inception", inception_weights=bad)


def test_inception_architecture_takes_the_pytorch_fid_state_dict(tmp_path):
    """Random weights with the published names and shapes load and give (N, 2048) features + 1008 logits."""
    import torch
    from safetensors.torch import save_file

    from ganrt.metrics.inception import build_fid_inception

    torch.manual_seed(0)
    model = build_fid_inception()
    state = model.state_dict()
    # names as in torchvision's Inception3 / pytorch-fid's FID weights
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var",
                "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.bias", "fc.weight"):
        assert key in state
    assert tuple(state["fc.weight"].shape) == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)
    path = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    ext = get_extractor("inception", inception_weights=path)
    images = np.random.default_rng(0).integers(0, 255, size=(2, 32, 32, 1)).astype(np.uint8)
    feats, logits = ext.extract(images, batch_size=2)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008) and np.isfinite(feats).all()
    ident = ext.identity()
    assert len(ident["weights_sha256"]) == 64 and "299" in ident["resize"]
    assert ext.metric_names() == {"fd": "FID", "kid": "KID", "is": "IS"}


def test_pixel_projection_is_fixed_and_labelled():
    a, b = PixelProjection(), PixelProjection()
    images = np.random.default_rng(0).integers(0, 255, size=(4, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(a.extract(images)[0], b.extract(images)[0])
    assert a.metric_names()["fd"] == "FD-pixels" and a.extract(images)[1] is None
