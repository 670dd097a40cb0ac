"""The Python-backend model in-process, with the few names of Triton's ``triton_python_backend_utils`` it uses
standing in (the real server runs it in test_triton_server.py): a batch of requests is one generate call whose
rows go back to their requests exactly; a bad request fails alone with INVALID_ARG and its message; a backend
failure fails the batch with INTERNAL and the model answers the next batch."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="the repository is written with Triton's schema")

from google.protobuf import json_format, text_format  # noqa: E402

from ganrt.bundle import Bundle  # noqa: E402
from ganrt.export.triton import TritonOptions, model_config_pb2, write_repository  # noqa: E402
from ganrt.latents import labels_from_seeds, latents_from_seeds  # noqa: E402


class TritonError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.tensors, self.error = {t.name: t.array for t in output_tensors}, error


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


@pytest.fixture
def model(bundle_dir, tmp_path, monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TritonError, fake.InferenceResponse, fake.Tensor = TritonError, InferenceResponse, Tensor
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    repo = tmp_path / "repo"
    write_repository(Bundle.open(bundle_dir), repo, TritonOptions(backend="python", device="cpu", max_batch=8))
    config = text_format.Parse((repo / "bundle" / "config.pbtxt").read_text(), model_config_pb2().ModelConfig())
    from ganrt.serve.triton_model import TritonPythonModel

    m = TritonPythonModel()
    m.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
                  "model_repository": str(repo / "bundle"), "model_version": "1", "model_instance_kind": "CPU"})
    yield m
    m.finalize()


def request(**arrays):
    return {name: Tensor(name, a) for name, a in arrays.items()}


def test_a_batch_is_answered_row_for_row_and_a_bad_request_fails_alone(model):
    z = latents_from_seeds([50, 51], 16)
    answers = model.execute([
        request(seeds=np.array([1, 2, 3], np.int64)),                                # Triton's reshape: [B]
        request(seeds=np.array([4], np.int64), labels=np.array([10], np.int64)),     # label out of range
        request(z=z, labels=np.array([7, 7], np.int64)),
    ])
    gen = model.gen
    np.testing.assert_array_equal(answers[0].tensors["images"],
                                  gen.generate(seeds=[1, 2, 3], labels=labels_from_seeds([1, 2, 3], 10)))
    assert answers[1].tensors == {} and answers[1].error.code == "INVALID_ARG"
    assert "label 10 is out of range" in answers[1].error.message
    np.testing.assert_array_equal(answers[2].tensors["images"], gen.generate(z=z, labels=[7, 7]))


def test_a_backend_failure_fails_its_batch_with_internal_and_the_next_batch_works(model, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("device lost")

    with monkeypatch.context() as m:
        m.setattr(model.gen, "generate", broken)
        answers = model.execute([request(seeds=np.array([1], np.int64)), request(seeds=np.array([2], np.int64))])
    assert calls == [1]  # one generate call for the batch
    assert [(a.error.code, a.error.message) for a in answers] == \
        [("INTERNAL", "internal error (RuntimeError: device lost)")] * 2
    (ok,) = model.execute([request(seeds=np.array([2], np.int64))])
    assert ok.error is None and ok.tensors["images"].shape == (1, 32, 32, 1)
