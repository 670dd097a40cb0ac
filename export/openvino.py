"""The CPU fast path at export: OpenVINO parity for the bf16 graph and an NNCF int8 OpenVINO IR.

- bf16 ("onnx-bf16") is the ConvTranspose-rewritten fp32 graph, meant to run with OpenVINO's bf16
  inference precision hint (its bf16 kernels cover convolution, not deconvolution: docs/export-notes.md). Its
  parity is measured by running it through OpenVINO with that hint. On a CPU without bf16 (no 'BF16' in
  OpenVINO's CPU OPTIMIZATION_CAPABILITIES) OpenVINO runs it in f32: the entry records
  ``"bf16_hardware": false`` and the figures are then those of f32.
- int8 ("openvino-int8"): NNCF post-training quantization of the rewritten graph (PERFORMANCE preset:
  symmetric), calibrated on latents from N(0, I) + uniform labels; saved as OpenVINO IR (xml + bin).
  ``keep_first`` leaves the first weighted layer (the matrix product on the latent: <1% of the MACs but
  most of the int8 error, and at batch 1 most of the weight bytes read) in fp32; export tries every layer
  in int8 first (export/pipeline.py). Measured: on the demo generator (AVX-512 CPU) all-int8 gave 49.0 dB
  PSNR against 52.2 dB with the first layer fp32, and 0.70x against 0.80x onnxruntime fp32 latency at
  batch 1; on this project's probe (tools/cpu_fastpath_probe.py, AVX2 CPU, DCGAN-64) the
  first-layer-fp32 IR ran 0.22-0.28x onnxruntime fp32 at 40.6 dB.

openvino and nncf are imported only here, when these artifacts are asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import BackendUnavailable, ExportError
from ganrt.export.graph import RAW_OUTPUT, calibration_inputs
from ganrt.export.verify import Reference, Tolerance, Verification, compare_outputs

OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 IR: its non-quantized ops in f32


def require_openvino(what: str):
    """The openvino module, or a clear BackendUnavailable saying what needed it."""
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailable(f"{what} needs OpenVINO, which is not installed: `pip install 'ganrt[cpu]'` "
                                 "(or drop it from the export)") from None
    return ov


def cpu_capabilities(core) -> list[str]:
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_hardware() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 arithmetic here (False without OpenVINO)."""
    try:
        ov = require_openvino("bf16")
    except BackendUnavailable:
        return False
    return "BF16" in cpu_capabilities(ov.Core())


def verify_openvino(model: Any, reference: Reference, spec, *, variant: str, tolerance: Tolerance,
                    precision: str, threads: int | None = None) -> Verification:
    """Run ``model`` (a path to ONNX/IR, or an ``openvino.Model``) on OpenVINO's CPU plugin with the
    precision hint of ``precision`` on the reference's feeds, and compare with the torch reference."""
    ov = require_openvino(f"verifying {variant}")
    import torch

    core = ov.Core()
    m = core.read_model(str(model)) if isinstance(model, (str, Path)) else model
    config = {"INFERENCE_PRECISION_HINT": OV_HINT[precision], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": str(int(threads or torch.get_num_threads()))}
    compiled = core.compile_model(m, "CPU", config)  # dynamic batch: one compile for every verified batch
    names = [out.get_any_name() for out in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = compiled.create_infer_request().infer(feeds)
        return {name: np.asarray(result[compiled.output(name)]) for name in names}

    v = compare_outputs(run, reference, spec, variant=variant, tolerance=tolerance,
                        runner=f"openvino-cpu-{OV_HINT[precision]}")
    v.parity["openvino"] = ov.__version__
    return v


CALIBRATION_BATCH = 8  # latents per NNCF item when memory allows
CALIBRATION_MEMORY_SHARE = 0.25  # of the memory available now, for the activations NNCF holds per item


def activation_bytes(model_path: Path) -> int:
    """Bytes of every float activation and output of the ONNX graph at ``model_path`` for one latent (batch
    axis = 1), from ONNX shape inference. NNCF's statistics collection runs the graph with each of them as an output, so
    they are alive at once: about what one calibration item costs per latent."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path), load_external_data=False))
    widths = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2,
              onnx.TensorProto.DOUBLE: 8}
    total = 0
    for info in [*model.graph.value_info, *model.graph.output]:
        t = info.type.tensor_type
        if t.elem_type not in widths:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]  # the symbolic batch -> 1
        total += widths[t.elem_type] * math.prod(dims)
    return total


def available_memory() -> int | None:
    """Bytes of memory available to this process now: the machine's ``MemAvailable``, less where a cgroup v2
    limit (a container's) leaves less; None where unknown."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def calibration_batch(model_path: Path) -> int:
    """Latents per NNCF calibration item: CALIBRATION_BATCH, fewer where a batch's activations would take more
    than CALIBRATION_MEMORY_SHARE of the memory available (a 256x256 StyleGAN3-T's batch of 8 ran out of 24 GB
    and was killed by the kernel). One latent needing more than all of it is refused with the figures."""
    per_latent, free = activation_bytes(model_path), available_memory()
    if free is None or per_latent <= 0:
        return CALIBRATION_BATCH
    if per_latent > free:
        raise ExportError(f"OpenVINO int8 calibration (NNCF) holds every activation of a latent at once: about "
                          f"{per_latent / 2**20:,.0f} MiB for this graph, and {free / 2**20:,.0f} MiB of memory is "
                          "available. Export without --openvino-int8, or on a machine with more memory")
    return max(1, min(CALIBRATION_BATCH, int(free * CALIBRATION_MEMORY_SHARE) // per_latent))


def quantize_int8(model_path: Path, spec, *, calibration_size: int = 128, keep_first: bool = True,
                  seed: int = 20240607):
    """NNCF post-training quantization of the ONNX graph at ``model_path`` -> (openvino.Model, info)."""
    ov = require_openvino("the OpenVINO int8 artifact")
    try:
        import nncf
    except ImportError:
        raise BackendUnavailable("the OpenVINO int8 artifact needs NNCF, which is not installed: "
                                 "`pip install 'ganrt[cpu]'` (or `pip install nncf`)") from None
    core = ov.Core()
    model = core.read_model(str(model_path))
    inputs = [p.get_any_name() for p in model.inputs]
    batch = calibration_batch(model_path)
    feeds = [{k: v for k, v in f.items() if k in inputs}
             for f in calibration_inputs(spec, calibration_size, seed=seed, batch=batch)]
    ignored, kept = None, []
    if keep_first:
        weighted = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() in ("MatMul", "Convolution", "ConvolutionBackpropData")]
        kept = weighted[:1]
        ignored = nncf.IgnoredScope(names=kept) if kept else None
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(feeds), ignored_scope=ignored)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"NNCF could not quantize the graph for the OpenVINO int8 artifact: {first}. "
                          "Export without --openvino-int8") from None
    fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    info = {"quantizer": "nncf.quantize (post-training)", "nncf": nncf.__version__, "openvino": ov.__version__,
            "preset": "performance (symmetric)",
            "calibration": {"latents": calibration_size, "seed": seed, "batch": batch, "z": "N(0, I)",
                            "labels": "uniform"},
            "kept_fp32": kept, "fake_quantize_nodes": fq}
    return quantized, info


def without_raw_output(model):
    """The same ``openvino.Model`` with only its "images" output (the raw float output is for verification)."""
    ov = require_openvino("the OpenVINO int8 artifact")
    keep = [r for r in model.get_results() if RAW_OUTPUT not in r.output(0).get_names()
            and RAW_OUTPUT not in r.input_value(0).get_names()]
    if len(keep) == len(model.get_results()):
        return model
    return ov.Model(keep, model.get_parameters(), model.get_friendly_name())


def save_ir(model, xml: Path) -> tuple[Path, Path]:
    """Write ``model`` as OpenVINO IR (xml + bin beside it, weights not compressed further)."""
    ov = require_openvino("the OpenVINO int8 artifact")
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")
