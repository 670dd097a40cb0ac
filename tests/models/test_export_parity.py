"""Every registered architecture exports to ONNX with a dynamic batch axis and matches torch within one
uint8 level at batch 1, 3 and 16 (images post-processed by ganrt.postprocess.ToUint8NHWC in both)."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.models import names

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


class _WithPostprocess(torch.nn.Module):
    """G + ToUint8NHWC with the graph's inputs as explicit arguments (z, [labels], [truncation])."""

    def __init__(self, generator, spec) -> None:
        super().__init__()
        from ganrt.postprocess import ToUint8NHWC

        self.g = generator
        self.post = ToUint8NHWC(spec.output_range)
        self.conditional = spec.num_classes > 0
        self.truncated = spec.has_truncation

    def forward(self, *inputs):
        z, rest = inputs[0], list(inputs[1:])
        labels = rest.pop(0) if self.conditional else None
        truncation = rest.pop(0) if self.truncated else None
        return self.post(self.g(z, labels, truncation))


def _export_onnx(generator, spec, path, example: dict) -> None:
    # spectral norm parametrizations become constants, as ganrt's exporter does
    for m in generator.modules():
        if torch.nn.utils.parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                torch.nn.utils.parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(_WithPostprocess(generator, spec), tuple(example.values()), str(path),
                      input_names=list(example), output_names=["images"],
                      dynamic_shapes=(tuple({0: batch} for _ in example),), dynamo=True, verbose=False)


@pytest.mark.parametrize("arch", names())
def test_export_matches_torch_within_one_level_at_batch_1_3_16(arch, kit, tmp_path):
    spec = kit.tiny_spec(arch, conditional=True)
    g = kit.exercised_generator(spec)
    path = tmp_path / f"{arch}.onnx"
    _export_onnx(g, spec, path, kit.random_inputs(spec, 2, seed=0))
    wrapped = _WithPostprocess(g, spec).eval()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    assert graph_inputs == list(kit.random_inputs(spec, 1))
    assert session.get_inputs()[0].shape[0] not in (1, 2), "batch axis must be dynamic"
    for batch in (1, 3, 16):
        inputs = kit.random_inputs(spec, batch, seed=batch)
        with torch.no_grad():
            ref = wrapped(*inputs.values()).numpy()
        out = session.run(["images"], {k: v.numpy() for k, v in inputs.items()})[0]
        assert out.dtype == np.uint8 and out.shape == (batch, spec.height, spec.width, spec.channels)
        diff = np.abs(ref.astype(np.int16) - out.astype(np.int16)).max()
        assert diff <= 1, f"{arch} batch {batch}: max |diff| {diff} uint8 levels"
        assert ref.std() > 0, "reference images are constant: the test would prove nothing"
