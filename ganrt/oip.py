"""ganrt's own model as the Open Inference Protocol's servers describe it, in Triton's ModelConfig terms: the one
description ``ganrt serve`` gives (HTTP ``/v2/models/<m>/config`` and the gRPC ModelConfig) and the Python-backend
model of ``ganrt export-triton --backend python`` declares.

Inputs: ``z`` FP32 [latent_dim] or ``seeds`` INT64 (a request gives exactly one, so both are ``optional``),
``labels`` INT64 (optional: seeds have their documented labels) and ``truncation`` FP32 as the generator has
them, the per-image ones ``dims: [1]`` reshaped to ``[]`` (the [B, 1] Triton's clients send). Output: what the
runtime returns for every bundle, ``images`` UINT8 [H, W, C] (a graph exported with float output is converted by
the runtime). Dims are without the batch axis (``max_batch_size`` > 0).
"""

from __future__ import annotations

from typing import Any

from ganrt.spec import GeneratorSpec

PER_IMAGE = {"dims": [1], "reshape": {"shape": []}, "optional": True}


def config_io(spec: GeneratorSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) in ModelConfig's field names (see the module's docstring)."""
    inputs = [{"name": "z", "data_type": "TYPE_FP32", "dims": [spec.latent_dim], "optional": True},
              {"name": "seeds", "data_type": "TYPE_INT64", **PER_IMAGE}]
    if spec.conditional:
        inputs.append({"name": "labels", "data_type": "TYPE_INT64", **PER_IMAGE})
    if spec.has_truncation:
        inputs.append({"name": "truncation", "data_type": "TYPE_FP32", **PER_IMAGE})
    outputs = [{"name": "images", "data_type": "TYPE_UINT8", "dims": [spec.height, spec.width, spec.channels]}]
    return inputs, outputs
