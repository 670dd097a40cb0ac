"""The GPU fast path on torch alone: the reference weights shipped in fp16 / bf16, each with its own parity.

Many GPU machines have CUDA torch but neither TensorRT nor onnxruntime-gpu. For them the bundle carries
``weights-fp16`` / ``weights-bf16`` (``generator.<precision>.safetensors``: the fp32 reference's floating-point
tensors cast once, half the size), verified like every graph: the generator is run in that precision on the
reference's inputs and compared with the fp32 reference under the precision's tolerance
(``ganrt.precisions``). The run happens on CUDA when this machine has it, else on the CPU in the same dtype
(the rounding of the weights and activations, not cuDNN's kernels); ``made_by.verified_on`` says which.
The torch backend runs them as the variants ``torch-<precision>-cuda[-cl|-cudagraph|-cl-cudagraph|-compile]``,
which ``auto`` then ranks like the others (the parity is on record); ``make gpu-check`` measures each of them
on the GPU itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganrt.bundle import Staged
from ganrt.errors import ConfigError
from ganrt.export.graph import RAW_OUTPUT
from ganrt.export.verify import Verification, compare_outputs
from ganrt.precisions import PRECISIONS
from ganrt.spec import GeneratorSpec

TORCH_WEIGHT_PRECISIONS = ("fp16", "bf16")


def artifact_name(precision: str) -> str:
    return f"weights-{precision}"


def file_name(precision: str) -> str:
    return f"generator.{precision}.safetensors"


def check_precisions(precisions) -> tuple[str, ...]:
    bad = [p for p in precisions if p not in TORCH_WEIGHT_PRECISIONS]
    if bad:
        raise ConfigError(f"torch weights can be shipped in {', '.join(TORCH_WEIGHT_PRECISIONS)}, not {bad[0]!r}")
    return tuple(dict.fromkeys(precisions))


def write_weights(path: Path, generator: torch.nn.Module, spec: GeneratorSpec, source: dict[str, Any],
                  precision: str | None = None) -> None:
    """``generator``'s weights as a ganrt checkpoint (G.-prefixed); ``precision``: its floating-point tensors
    cast to it (the fp32 weights when None)."""
    from ganrt.checkpoint import Checkpoint, save_checkpoint

    dtype = getattr(torch, PRECISIONS[precision].torch_dtype) if precision else None
    tensors = {f"G.{k}": (t.to(dtype) if dtype is not None and t.is_floating_point() else t)
               for k, t in generator.state_dict().items()}
    extra = {"exported_from": source, **({"cast_to": precision} if precision else {})}
    save_checkpoint(path, Checkpoint(spec=spec, tensors=tensors, step=int(source.get("step", 0) or 0), extra=extra))


def build_torch_weights(module: torch.nn.Module, generator: torch.nn.Module, spec: GeneratorSpec, stage: Path, *,
                        precisions: tuple[str, ...], reference, tolerances: dict, source: dict[str, Any],
                        log) -> tuple[list[Staged], list[Verification]]:
    """Staged ``weights-<precision>`` artifacts and their verifications (``module``: the graph module the
    reference was computed with; ``generator``: the module whose weights are shipped)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    staged, verifications = [], []
    for precision in precisions:
        dtype = getattr(torch, PRECISIONS[precision].torch_dtype)
        log(f"verifying the torch {precision} weights against torch fp32 ({device})")
        cast = copy.deepcopy(module).to(device=device, dtype=dtype).eval()

        def run(feeds: dict[str, np.ndarray], cast=cast, dtype=dtype) -> dict[str, np.ndarray]:
            args = []
            for value in feeds.values():
                t = torch.from_numpy(np.ascontiguousarray(value)).to(device)
                args.append(t.to(dtype) if t.is_floating_point() else t)
            with torch.inference_mode():
                out = cast(*args)
            images, raw = out if isinstance(out, tuple) else (out, out)
            result = {"images": images.cpu().numpy() if images.dtype == torch.uint8 else images.float().cpu().numpy()}
            result[RAW_OUTPUT] = raw.float().cpu().numpy()
            return result

        v = compare_outputs(run, reference, spec, variant=artifact_name(precision), tolerance=tolerances[precision],
                            runner=f"torch-{device}")
        log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
        verifications.append(v)
        path = stage / file_name(precision)
        write_weights(path, generator, spec, source, precision)
        staged.append(Staged(artifact_name(precision), path, {
            "file": file_name(precision), "kind": "weights", "precision": precision,
            "made_by": {"format": "ganrt.checkpoint", "cast_from": "weights", "torch": torch.__version__,
                        "verified_on": device},
            "parity": v.parity, "passed": v.passed, "tolerance": v.tolerance, "failures": v.failures}))
    return staged, verifications
