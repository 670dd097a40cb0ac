"""Every variant a bundle offers runs, and draws the torch reference's images, at every batch it can be asked for.

The generator is the PyTorch DCGAN tutorial's (a user's module taking z as [B, nz, 1, 1], ganrt's own writing of it
in tests/conftest.py), exported with every CPU precision. Before export verified variants through the runtime's
own backends, openvino-fp32 and openvino-bf16 of this generator passed export and then failed at run time for every
batch from 2 up (a KeyError binding the rewritten graph's input), and auto could pick them.
"""

from __future__ import annotations

import pytest
import torch

from ganrt.export.graph import GraphModule, prepare_generator
from ganrt.export.verify import TOLERANCES
from ganrt.latents import latents_from_seeds
from ganrt.parity import image_parity
from ganrt.runtime import load
from ganrt.runtime.machine import Availability
from ganrt.runtime.pool import batch_buckets
from ganrt.runtime.selection import here

SEEDS = list(range(500, 564))


@pytest.fixture(scope="module")
def reference(dcgan_tutorial_bundle):
    result, module = dcgan_tutorial_bundle
    graph = GraphModule(prepare_generator(module), result.bundle.spec).eval()
    with torch.no_grad():
        images, _ = graph(torch.from_numpy(latents_from_seeds(SEEDS, 100)))
    assert images.float().std() > 20, "the reference images are near-flat: the comparison would prove little"
    return images.numpy()


def test_export_verified_every_offered_variant_at_every_bucket_through_its_backend(dcgan_tutorial_bundle):
    result, _ = dcgan_tutorial_bundle
    bundle = result.bundle
    offered = here(bundle.to_dict(), Availability.probe(), trust_code=True)
    assert {"onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-fp32-rw", "openvino-fp32", "openvino-bf16",
            "torch-fp32"} <= set(offered["runnable"])
    assert result.ok and not offered["failed"], result.table()
    for name in offered["runnable"]:
        record = bundle.variants[name]
        if record.get("why_not"):  # torch.compile: compiles each batch shape for minutes
            assert "compile" in name and record["passed"] is None
            continue
        buckets = list(batch_buckets(64, range(1, 4) if name == "openvino-int8" and "openvino-int8-small"
                                     in bundle.artifacts else ()))
        assert record["passed"] is True and record["batch_sizes"] == buckets, (name, record)
        assert record["verified_on"]["cpu"] and record["artifact"] in bundle.artifacts


def test_every_offered_variant_draws_the_reference_at_every_batch_from_1_to_64(dcgan_tutorial_bundle, reference):
    result, _ = dcgan_tutorial_bundle
    bundle = result.bundle
    offered = here(bundle.to_dict(), Availability.probe(), trust_code=True)["runnable"]
    z = latents_from_seeds(SEEDS, 100)
    ran = []
    for name in offered:
        if bundle.variants[name].get("why_not"):
            continue
        with load(bundle.path, variant=name, threads=1, trust_code=True) as gen:
            tolerance = TOLERANCES[gen.precision]
            for b in range(1, 65):
                images = gen.generate(z=z[:b])
                failures = tolerance.failures(image_parity(reference[:b], images))
                assert not failures, f"{name} at batch {b}: {failures}"
        ran.append(name)
    assert len(ran) >= 7, ran


def test_a_variant_that_fails_at_run_time_is_recorded_and_never_chosen(dcgan_tutorial, tmp_path, monkeypatch):
    """The binding bug put back: export's variant check catches it, records it and never offers it."""
    import warnings

    from ganrt.export import ExportOptions, export
    from ganrt.runtime import openvino_backend
    from ganrt.runtime.selection import select

    monkeypatch.setattr(openvino_backend, "input_name", lambda port, wanted: port.get_any_name())
    module, _, spec = dcgan_tutorial
    result = export(module, tmp_path / "b", spec=spec, options=ExportOptions(max_batch=4))

    assert not result.ok and {"openvino-fp32", "openvino-bf16"} <= set(result.failed)
    record = result.bundle.variants["openvino-fp32"]
    assert record["passed"] is False and "rw_flat" in record["failures"][0], record
    assert "onnxruntime-fp32-rw" in result.passed and "onnx-fp32-rw" in result.bundle.artifacts
    manifest = result.bundle.to_dict()
    avail = Availability.probe()
    assert select(manifest, avail).variant != "openvino-fp32"
    assert "openvino-fp32" in here(manifest, avail)["failed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asked = select(manifest, avail, variant="openvino-fp32")  # by name it still loads, with a warning
    assert "WARNING" in asked.reason
