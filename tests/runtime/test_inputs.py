"""Bad inputs get a clear GanrtError from the shared base before any backend runs."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.errors import BackendUnavailable, BundleError, ConfigError, InputError
from ganrt.runtime import load, validate_inputs
from ganrt.spec import GeneratorSpec


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def gen(request, bundle_dir):
    with load(bundle_dir, backend=request.param) as g:
        yield g


def test_wrong_latent_size(gen):
    with pytest.raises(InputError, match=r"z must have shape \(B, 16\).*got shape \(2, 15\)"):
        gen.generate(z=np.zeros((2, 15), np.float32), labels=[0, 1])


def test_one_dimensional_latent_is_refused(gen):
    with pytest.raises(InputError, match=r"shape \(B, 16\)"):
        gen.generate(z=np.zeros(16, np.float32), labels=[0])


def test_nan_latent(gen):
    z = np.zeros((3, 16), np.float32)
    z[1, 4] = np.nan
    with pytest.raises(InputError, match="1 NaN/Inf value"):
        gen.generate(z=z, labels=[0, 1, 2])


def test_non_numeric_latents_are_refused(gen):
    with pytest.raises(InputError, match="floating-point"):
        gen.generate(z=np.array([["a"] * 16]), labels=[0])


@pytest.mark.parametrize("label", [10, -1])
def test_label_out_of_range(gen, label):
    with pytest.raises(InputError, match=rf"label {label} is out of range.*10 classes"):
        gen.generate(seeds=[0, 1], labels=[0, label])


def test_missing_labels_for_conditional_model(gen):
    with pytest.raises(InputError, match="class-conditional.*pass labels"):
        gen.generate(seeds=[0])


def test_label_count_must_match_batch(gen):
    with pytest.raises(InputError, match=r"labels must have shape \(3,\)"):
        gen.generate(seeds=[0, 1, 2], labels=[0, 1])


def test_fractional_labels_are_refused(gen):
    with pytest.raises(InputError, match="labels must be integers"):
        gen.generate(seeds=[0], labels=[1.5])


def test_batch_zero(gen):
    with pytest.raises(InputError, match="batch size is 0"):
        gen.generate(seeds=[], labels=[])
    with pytest.raises(InputError, match="batch size is 0"):
        gen.generate(z=np.zeros((0, 16), np.float32), labels=np.zeros(0, np.int64))


def test_truncation_for_family_without_it(gen):
    with pytest.raises(InputError, match="'dcgan' generator has no truncation"):
        gen.generate(seeds=[0], labels=0, truncation=0.7)


def test_seeds_and_z_are_exclusive(gen):
    with pytest.raises(InputError, match="exactly one of seeds"):
        gen.generate(seeds=[0], z=np.zeros((1, 16), np.float32), labels=0)
    with pytest.raises(InputError, match="exactly one of seeds"):
        gen.generate(labels=0)


def test_negative_seed(gen):
    with pytest.raises(InputError, match="non-negative"):
        gen.generate(seeds=[-3], labels=0)


def test_closed_generator_refuses_work(bundle_dir):
    g = load(bundle_dir, backend="onnxruntime")
    g.close()
    with pytest.raises(InputError, match="closed"):
        g.generate(seeds=[0], labels=0)


# -- pure validation, for the cases the tiny conditional DCGAN bundle cannot show ---------------------------
UNCONDITIONAL = GeneratorSpec(arch="dcgan", latent_dim=8, channels=1, height=8, width=8)
TRUNCATED = GeneratorSpec(arch="stylegan", latent_dim=8, channels=1, height=8, width=8, has_truncation=True)


def test_labels_for_unconditional_model():
    with pytest.raises(InputError, match="unconditional.*takes no labels"):
        validate_inputs(UNCONDITIONAL, np.zeros((1, 8), np.float32), labels=[0])


def test_truncation_defaults_to_one_and_broadcasts():
    z = np.zeros((3, 8), np.float32)
    assert validate_inputs(TRUNCATED, z)["truncation"].tolist() == [1.0, 1.0, 1.0]
    feeds = validate_inputs(TRUNCATED, z, truncation=0.5)
    assert feeds["truncation"].dtype == np.float32 and feeds["truncation"].tolist() == [0.5] * 3


@pytest.mark.parametrize("psi", [-0.1, 2.5, float("nan")])
def test_truncation_out_of_range(psi):
    with pytest.raises(InputError, match=r"truncation must be finite and in \[0.0, 2.0\]"):
        validate_inputs(TRUNCATED, np.zeros((2, 8), np.float32), truncation=psi)


def test_feeds_are_contiguous_with_graph_dtypes():
    z = np.asfortranarray(np.ones((4, 8), np.float64))
    feeds = validate_inputs(UNCONDITIONAL, z)
    assert feeds["z"].dtype == np.float32 and feeds["z"].flags.c_contiguous and set(feeds) == {"z"}


# -- what a bundle or this machine cannot do -----------------------------------------------------------------
def test_bundle_without_requested_precision(bundle_dir):
    with pytest.raises(BundleError, match=r"no fp16 artifact \(it has: fp32\)"):
        load(bundle_dir, precision="fp16")
    with pytest.raises(BundleError, match=r"no int8 artifact \(it has: fp32\)"):
        load(bundle_dir, backend="onnxruntime", precision="int8")


def test_torch_fp16_on_cpu_is_refused(bundle_dir):
    with pytest.raises(BackendUnavailable, match="torch fp16 runs on CUDA only"):
        load(bundle_dir, backend="torch", precision="fp16", device="cpu")


def test_tensorrt_without_engine_or_gpu(bundle_dir):
    with pytest.raises(BackendUnavailable, match="no TensorRT engine"):
        load(bundle_dir, backend="tensorrt")


def test_unknown_backend_and_bad_options(bundle_dir):
    with pytest.raises(ConfigError, match="unknown backend 'tf'"):
        load(bundle_dir, backend="tf")
    with pytest.raises(ConfigError, match="compile=True applies to the torch backend"):
        load(bundle_dir, backend="onnxruntime", compile=True)
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        load(bundle_dir, threads=0)


def test_tampered_bundle_is_refused(edit_bundle):
    path = edit_bundle()
    with open(path / "model.fp32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match its recorded sha256"):
        load(path)
