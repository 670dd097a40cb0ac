"""Every registered architecture goes through ganrt's exporter (ganrt.export.export) with a dynamic batch
axis, and the shipped fp32 graph matches torch within one uint8 level at batch 1, 3 and 16 (torch images
post-processed by ganrt.postprocess.ToUint8NHWC, as the graph does inside)."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.models import names

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

BATCHES = (1, 3, 16)


@pytest.mark.parametrize("arch", names())
def test_export_matches_torch_within_one_level_at_batch_1_3_16(arch, kit, tmp_path):
    from ganrt.export import ExportOptions, export
    from ganrt.postprocess import ToUint8NHWC

    spec = kit.tiny_spec(arch, conditional=True)
    g = kit.exercised_generator(spec)
    post = ToUint8NHWC(spec.output_range)
    inputs = {b: kit.random_inputs(spec, b, seed=b) for b in BATCHES}
    with torch.no_grad():  # the reference before export, which freezes spectral norm in place
        refs = {b: post(g(*inputs[b].values())).numpy() for b in BATCHES}

    bundle = export(g, tmp_path / "bundle", spec=spec, options=ExportOptions(precisions=("fp32",), max_batch=16)).bundle
    entry = bundle.artifact("onnx-fp32")
    assert entry["passed"] is True
    assert bundle.to_dict()["graph"]["dynamic_axes"], "the batch axis must be dynamic"

    session = ort.InferenceSession(str(bundle.artifact_path("onnx-fp32")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs[1])
    assert not isinstance(session.get_inputs()[0].shape[0], int), "batch axis must be dynamic"
    for b in BATCHES:
        out = session.run(["images"], {k: v.numpy() for k, v in inputs[b].items()})[0]
        ref = refs[b]
        assert out.dtype == np.uint8 and out.shape == (b, spec.height, spec.width, spec.channels)
        diff = np.abs(ref.astype(np.int16) - out.astype(np.int16)).max()
        assert diff <= 1, f"{arch} batch {b}: max |diff| {diff} uint8 levels"
        assert ref.std() > 0, "reference images are constant: the test would prove nothing"
