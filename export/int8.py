"""int8: a static QDQ graph from onnxruntime.quantization, symmetric so TensorRT can consume it.

``quant_pre_process(skip_symbolic_shape=True)`` (symbolic shape inference fails on these graphs:
docs/export-notes.md) then ``quantize_static`` in QDQ format, int8 activations and weights, both symmetric
(zero-point 0), weights per channel, MinMax calibration on latents drawn from the generator's own input
distribution (z ~ N(0, I), uniform labels): a generator needs no calibration dataset.

Never quantized: the tail (tanh, the uint8 post-processing) and demodulation (Pow/Sqrt/Reciprocal).
Which op types are quantized is a parameter; :data:`DEFAULT_OP_TYPES` (weighted layers only) measured
best or equal: digits DCGAN 41.8 dB (every op type: 41.6 dB); a Conv/InstanceNorm/Upsample module 25.0 dB
(Conv only 25.6, every op 25.5). MinMax calibration on 64 latents measured best or equal (512 latents,
percentile or entropy: 40.9-41.9 dB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import ExportError
from ganrt.export.fp16 import final_layers
from ganrt.export.graph import calibration_inputs

DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
NEVER_QUANTIZED_OPS = ("Pow", "Sqrt", "Reciprocal", "Tanh", "Clip", "Round", "Cast", "Sigmoid")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class LatentReader:
    """An onnxruntime CalibrationDataReader over sampled latents (built lazily: onnxruntime is optional)."""

    def __new__(cls, spec, n: int, input_names: list[str], seed: int = 7):
        from onnxruntime.quantization import CalibrationDataReader

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.feeds = [{k: v for k, v in f.items() if k in input_names}
                              for f in calibration_inputs(spec, n, seed=seed)]
                self.i = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                if self.i >= len(self.feeds):
                    return None
                self.i += 1
                return self.feeds[self.i - 1]

            def rewind(self) -> None:
                self.i = 0

        return _Reader()


def excluded_nodes(model, *, quantize_final_layer: bool = True) -> list[str]:
    """Names of the nodes never quantized: the tail after the last weighted layer, demodulation ops."""
    tail = final_layers(model)
    by_name = {n.name: n for n in model.graph.node}
    out = [n for n in tail if quantize_final_layer is False or by_name[n].op_type not in WEIGHTED_OPS]
    out += [n.name for n in model.graph.node if n.op_type in NEVER_QUANTIZED_OPS]
    return sorted(set(out))


def quantize_int8(fp32_path: str | Path, out_path: str | Path, spec, *, op_types: Sequence[str] | None = None,
                  calibration_size: int = 64, work_dir: str | Path | None = None,
                  quantize_final_layer: bool = True, calibration: str = "minmax") -> dict[str, Any]:
    """Quantize the fp32 graph at ``fp32_path`` into ``out_path``; returns made_by info.

    ``op_types``: op types to quantize (default :data:`DEFAULT_OP_TYPES`; an empty list quantizes every
    supported op type except the excluded tail/demodulation).
    ``calibration``: "minmax" (default: best measured on the digits DCGAN), "percentile" or "entropy".
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ganrt.export.fp16 import _name_nodes

    op_types = list(DEFAULT_OP_TYPES if op_types is None else op_types)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if calibration not in methods:
        raise ExportError(f"int8 calibration must be one of {sorted(methods)}, got {calibration!r}")
    work = Path(work_dir or Path(out_path).parent)
    pre = work / "int8.pre.onnx"
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    except Exception as e:
        raise ExportError(f"int8 pre-processing (onnxruntime quant_pre_process) failed: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    model = onnx.load(str(pre))
    _name_nodes(model)
    onnx.save(model, str(pre))
    exclude = excluded_nodes(model, quantize_final_layer=quantize_final_layer)
    inputs = [i.name for i in model.graph.input]
    try:
        quantize_static(
            str(pre), str(out_path), LatentReader(spec, calibration_size, inputs),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types or None, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            calibrate_method=methods[calibration],
            # bias stays float: TensorRT dequantizes int8 only
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    except Exception as e:
        raise ExportError(f"int8 quantization (onnxruntime quantize_static) failed: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; try another "
                          "--int8-ops selection or export without int8") from None
    q = onnx.load(str(out_path))
    zero_points = _nonzero_zero_points(q)
    if zero_points:
        raise ExportError(f"the int8 graph has non-zero zero-points ({', '.join(zero_points[:3])}): TensorRT "
                          "needs symmetric quantization; this is a bug in the quantizer settings")
    counts = {op: sum(1 for n in q.graph.node if n.op_type == op) for op in ("QuantizeLinear", "DequantizeLinear")}
    return {
        "quantizer": f"onnxruntime {onnxruntime.__version__} quantize_static",
        "format": "QDQ", "activations": "int8 symmetric (per tensor)", "weights": "int8 symmetric per-channel",
        "calibration": {"method": calibration, "latents": int(calibration_size),
                        "distribution": "z~N(0,I), labels uniform, truncation~U(0,1)"},
        "op_types": op_types or "all",
        "excluded_nodes": exclude,
        "qdq_nodes": counts,
    }


def _nonzero_zero_points(model) -> list[str]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    bad = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            if np.any(numpy_helper.to_array(inits[n.input[2]]) != 0):
                bad.append(n.name)
    return bad
