"""torch, onnxruntime and OpenVINO (fp32) draw the same images for the same seeds, within one uint8 level: on the
tiny conditional DCGAN and on the PyTorch DCGAN tutorial's generator (a user's module, z as [B, nz, 1, 1])."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.runtime import load

BATCHES = (1, 7, 64)


@pytest.fixture(scope="module", params=["tiny-dcgan", "dcgan-tutorial"])
def model(request, seeds_labels):
    """(bundle path, seeds, labels or None, image shape, the torch reference at each of BATCHES)."""
    seeds, labels = seeds_labels
    if request.param == "tiny-dcgan":
        path, shape = request.getfixturevalue("bundle_dir"), (32, 32, 1)
    else:
        path, shape, labels = request.getfixturevalue("dcgan_tutorial_bundle")[0].bundle.path, (64, 64, 3), None
    with load(path, backend="torch", trust_code=True) as gen:
        assert gen.variant == "torch-fp32" and gen.device == "cpu"
        reference = {b: gen.generate(seeds=seeds[:b], labels=None if labels is None else labels[:b]) for b in BATCHES}
    return path, seeds, labels, shape, reference


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_matches_torch_within_one_level_at_batch_1_7_64(backend, model):
    path, seeds, labels, shape, reference = model
    with load(path, backend=backend, precision="fp32") as gen:
        assert gen.backend == backend and gen.precision == "fp32"
        for b in BATCHES:
            images = gen.generate(seeds=seeds[:b], labels=None if labels is None else labels[:b])
            ref = reference[b]
            assert images.dtype == np.uint8 and images.shape == (b, *shape)
            diff = np.abs(images.astype(np.int16) - ref.astype(np.int16)).max()
            assert diff <= 1, f"{gen.variant} batch {b}: max |diff| {diff} levels"
    assert reference[64].std() > 10, "reference images are near-constant: the comparison would prove nothing"


@pytest.fixture(scope="module")
def reference(bundle_dir, seeds_labels):
    seeds, labels = seeds_labels
    with load(bundle_dir, backend="torch") as gen:
        return {b: gen.generate(seeds=seeds[:b], labels=labels[:b]) for b in BATCHES}


def test_labels_change_the_image(bundle_dir):
    with load(bundle_dir, backend="onnxruntime") as gen:
        a = gen.generate(seeds=[1, 1], labels=[0, 9])
    assert not np.array_equal(a[0], a[1])


def test_explicit_latents_equal_seeded_latents(bundle_dir):
    from ganrt.latents import latents_from_seeds

    with load(bundle_dir, backend="onnxruntime") as gen:
        by_seed = gen.generate(seeds=[3, 4], labels=5)
        by_z = gen.generate(z=latents_from_seeds([3, 4], 16), labels=[5, 5])
    np.testing.assert_array_equal(by_seed, by_z)


def test_openvino_fp32_sets_the_f32_precision_hint_explicitly(bundle_dir):
    with load(bundle_dir, backend="openvino", precision="fp32") as gen:
        compiled = gen._runner._compile(2, "LATENCY")
        import openvino as ov

        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"


def test_openvino_bf16_falls_back_to_fp32_on_a_cpu_without_bf16(bundle_dir):
    from ganrt.runtime.machine import openvino_cpu_capabilities

    if "BF16" in (openvino_cpu_capabilities() or ()):
        with load(bundle_dir, backend="openvino", precision="bf16") as gen:
            assert gen.precision == "bf16" and gen.variant == "openvino-bf16"
        return
    with pytest.warns(RuntimeWarning, match="no bf16 support"):
        gen = load(bundle_dir, backend="openvino", precision="bf16")
    with gen:
        assert gen.precision == "fp32" and gen.variant == "openvino-fp32"
        assert "running fp32 instead" in gen.reason
        assert gen.generate(seeds=[0], labels=0).shape == (1, 32, 32, 1)


def test_openvino_stream_split_and_bound_buffers_give_the_same_images(bundle_dir, reference, seeds_labels):
    """A batch split across THROUGHPUT streams (uneven chunks) equals one LATENCY request; calls that reuse a
    compiled batch shape, and results kept from earlier calls, are not overwritten by later ones."""
    from ganrt.bundle import Bundle
    from ganrt.runtime.openvino_backend import OpenVINOBackend

    seeds, labels = seeds_labels
    bundle = Bundle.open(bundle_dir)
    with load(bundle_dir, backend="openvino", precision="fp32") as gen:
        choice = gen.choice
    split = OpenVINOBackend(bundle, choice, throughput_batch=7, streams=3)
    single = OpenVINOBackend(bundle, choice, throughput_batch=10_000)
    with split, single:
        from ganrt.latents import latents_from_seeds

        z = latents_from_seeds(seeds[:7], bundle.spec.latent_dim)
        first = single.infer(z, labels[:7])
        again = single.infer(z[::-1].copy(), labels[:7][::-1].copy())  # same shape, other inputs
        np.testing.assert_array_equal(single.infer(z, labels[:7]), first)
        np.testing.assert_array_equal(again, first[::-1])
        parts = split.infer(z, labels[:7])  # padded to the bucket 8, over 3 streams: chunks of 2, 3 and 3
        entry = split._compiled.get(8)
        assert entry.hint == "THROUGHPUT" and entry.bounds == [(0, 2), (2, 5), (5, 8)]
        assert sorted(entry.models) == [2, 3]
        # other static shapes may pick other kernels: a pixel may round one level apart, the images not
        assert np.abs(parts.astype(np.int16) - first.astype(np.int16)).max() <= 1
        assert np.abs(first.astype(np.int16) - reference[7].astype(np.int16)).max() <= 1
