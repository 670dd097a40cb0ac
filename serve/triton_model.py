"""ganrt's model inside Triton's Python backend: the class a repository's ``model.py`` imports.

    # repo/<model>/1/model.py, written by `ganrt export-triton --backend python`
    from ganrt.serve.triton_model import TritonPythonModel

Triton's stub process (one per model instance) calls ``initialize`` once, then ``execute`` with the requests of
each batch its dynamic batcher formed. The model loads the bundle copied beside ``model.py`` with ganrt's runtime
(``auto``, or the variant the config's ``variant`` parameter names), warms every batch bucket up to
``max_batch_size``, and answers a batch with one ``generate`` call through the same code as ``ganrt serve``'s
batches (``service.generate_works``). Each request is read by the checks of every OIP front
(``protocol.work_from_tensors``): a bad request fails alone, with its message and Triton's INVALID_ARG; a backend
failure fails that batch's requests with INTERNAL and the model stays up.

``triton_python_backend_utils`` exists only inside Triton's stub; it is imported there, when Triton calls in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import GanrtError
from ganrt.export.triton import BUNDLE_COPY

INPUTS = ("z", "seeds", "labels", "truncation")


def _error(pb_utils, e: Exception, code: str):
    """An error response; ``code`` one of TritonError's codes (Triton 24.x and later; older: no code)."""
    if isinstance(e, GanrtError):
        message = str(e)
    else:
        message = f"internal error ({type(e).__name__}: {e})"
    codes = getattr(pb_utils.TritonError, code, None)
    error = pb_utils.TritonError(message) if codes is None else pb_utils.TritonError(message, codes)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from ganrt.runtime import load

        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        if args.get("model_instance_kind") == "GPU":
            # one stub process per instance: this instance's GPU is its only one
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.get("model_instance_device_id", 0))
        variant = params.get("variant") or "auto"
        bundle = Path(args["model_repository"]) / str(args["model_version"]) / BUNDLE_COPY
        self.max_batch = int(config["max_batch_size"])
        self.output = config["output"][0]["name"]
        self.gen = load(bundle, variant=None if variant == "auto" else variant, batch_size=self.max_batch,
                        device={"cpu": "cpu", "gpu": "cuda"}.get(params.get("device", ""), None))
        sizes = self.gen.warmup(sorted({1, self.max_batch} | {b for b in (self.gen.batch_buckets or ())
                                                              if b <= self.max_batch}))
        self._log(f"{config['name']}: {self.gen.variant} on {self.gen.device} ({self.gen.reason}); warmed batch "
                  f"sizes {sizes}")

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        from ganrt.serve.protocol import work_from_tensors
        from ganrt.serve.service import generate_works

        answers: list = [None] * len(requests)
        works = []
        for i, request in enumerate(requests):
            try:
                tensors = {}
                for name in INPUTS:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        tensors[name] = tensor.as_numpy()
                works.append((i, work_from_tensors(tensors, self.gen.spec, self.max_batch)))
            except GanrtError as e:
                answers[i] = _error(pb_utils, e, "INVALID_ARG")
        if works:
            try:
                images = generate_works(self.gen, [w for _, w in works])
            except Exception as e:  # noqa: BLE001 - this batch's requests fail; the model stays up
                for i, _ in works:
                    answers[i] = _error(pb_utils, e, "INTERNAL")
                return answers
            at = 0
            for i, w in works:
                part = np.ascontiguousarray(images[at:at + w.n])
                answers[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output, part)])
                at += w.n
        return answers

    def finalize(self) -> None:
        self.gen.close()

    @staticmethod
    def _log(message: str) -> None:
        import triton_python_backend_utils as pb_utils

        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            logger.log_info(message)
        else:
            print(message, flush=True)
