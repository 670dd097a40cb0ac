"""fp16: a mixed-precision graph with fp32 inputs and outputs, sensitive nodes kept in fp32.

Made with ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``. What stays fp32:

- op types: the converter's DEFAULT_OP_BLOCK_LIST (a custom list replaces it, and without it Resize
  breaks: docs/export-notes.md) + :data:`SENSITIVE_OP_TYPES` (normalizations, reductions, demodulation,
  exp/log, softmax);
- nodes whose values leave the safe fp16 range on calibration latents run through the fp32 graph
  (max |x| above ``safe_max``, or a large share of non-zero values below fp16's smallest normal);
- the final layers: every node after the last Conv/ConvTranspose/Gemm/MatMul on the way to an
  output, and that layer itself (the post-processing, tanh and the last projection).

Every kept node is listed, with why, in the artifact's ``made_by``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ganrt.export.graph import RAW_OUTPUT, calibration_inputs, drop_output

SENSITIVE_OP_TYPES = [
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "LpNormalization", "MeanVarianceNormalization",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "ReduceMax", "ReduceMin",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Softmax", "LogSoftmax", "Erf",
]
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 6.104e-05
SAFE_MAX = 4096.0  # 16x headroom below fp16's largest value: activations of unseen latents go further
UNDERFLOW_SHARE = 0.05  # keep a node when more than this share of its non-zero values are subnormal in fp16


def _name_nodes(model) -> None:
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def _unshare_initializers(model) -> None:
    """Give each node its own copy of a float initializer that several nodes read: the converter casts a
    shared initializer for its first reader and leaves a later fp32-kept (or fp16) reader with the wrong
    type (seen on BigGAN: 'Add: B has inconsistent type')."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        for j, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy_ = copy.deepcopy(inits[name])
                copy_.name = f"{name}__{seen[name]}"
                model.graph.initializer.append(copy_)
                node.input[j] = copy_.name


def _attach_raw_output(converted, producer: str, value_info) -> None:
    """Re-add the verification output ``raw`` (float32): the output of node ``producer``, which the
    converter may have renamed."""
    import onnx

    node = next(n for n in converted.graph.node if n.name == producer)
    tensor = node.output[0]
    if tensor == RAW_OUTPUT:
        tensor = f"{RAW_OUTPUT}__value"
        for n in converted.graph.node:
            n.output[:] = [tensor if o == RAW_OUTPUT else o for o in n.output]
            n.input[:] = [tensor if i == RAW_OUTPUT else i for i in n.input]
    inferred = onnx.shape_inference.infer_shapes(converted)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    if types.get(tensor) == onnx.TensorProto.FLOAT16:
        node = onnx.helper.make_node("Cast", [tensor], [RAW_OUTPUT], to=onnx.TensorProto.FLOAT, name="raw__cast")
    else:
        node = onnx.helper.make_node("Identity", [tensor], [RAW_OUTPUT], name="raw__output")
    converted.graph.node.append(node)
    converted.graph.output.append(value_info)


def value_ranges(model, feeds: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Run ``feeds`` through ``model`` exposing every float node output; per tensor: max |x| and the share of
    non-zero values below fp16's smallest normal (both over all feeds)."""
    import onnx
    import onnxruntime as ort

    probe = copy.deepcopy(model)
    probe = onnx.shape_inference.infer_shapes(probe)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*probe.graph.value_info, *probe.graph.output]}
    existing = {o.name for o in probe.graph.output}
    float_outputs = []
    for node in probe.graph.node:
        for out in node.output:
            if out and types.get(out) == onnx.TensorProto.FLOAT:
                float_outputs.append(out)
                if out not in existing:
                    probe.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    stats = {name: {"max_abs": 0.0, "tiny": 0, "nonzero": 0, "nonfinite": 0} for name in float_outputs}
    # one latent at a time: every intermediate tensor of a batch at once ran a 256x256 StyleGAN3 (24 GB) out of
    # memory, and the figures are per tensor over all feeds either way
    rows = [{k: v[i:i + 1] for k, v in f.items()} for f in feeds for i in range(len(next(iter(f.values()))))]
    for f in rows:
        for name, value in zip(float_outputs, sess.run(float_outputs, f), strict=True):
            a = np.abs(value)  # no float64 copy, no masked copies: 3x faster on a 128x552x552 tensor
            finite = np.isfinite(a)
            s = stats[name]
            bad = a.size - int(np.count_nonzero(finite))
            s["nonfinite"] += bad
            if bad:
                a = np.where(finite, a, 0)
            if a.size:
                s["max_abs"] = max(s["max_abs"], float(a.max()))
                s["nonzero"] += int(np.count_nonzero(a))
                s["tiny"] += int(np.count_nonzero((a > 0) & (a < FP16_MIN_NORMAL)))
    return {n: {"max_abs": s["max_abs"], "underflow_share": s["tiny"] / s["nonzero"] if s["nonzero"] else 0.0,
                "nonfinite": s["nonfinite"]} for n, s in stats.items()}


def final_layers(model) -> list[str]:
    """Names of the nodes from the last weighted layer (included) to the graph's outputs."""
    producer = {o: n for n in model.graph.node for o in n.output}
    kept: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        kept.append(node.name)
        if node.op_type not in WEIGHTED_OPS:
            stack.extend(i for i in node.input if i)
    return kept


def convert_fp16(model, spec, *, safe_max: float | None = None, calibration_size: int = 32,
                 keep_final_layers: bool = True) -> tuple[Any, dict[str, Any]]:
    """fp32 ModelProto -> (fp16 ModelProto with fp32 I/O, made_by info listing the kept nodes)."""
    import onnx
    import onnxconverter_common
    from onnxconverter_common import float16

    safe_max = float(safe_max or SAFE_MAX)
    model = copy.deepcopy(model)
    _name_nodes(model)
    _unshare_initializers(model)
    ranges = value_ranges(model, calibration_inputs(spec, calibration_size))
    kept: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        for out in node.output:
            r = ranges.get(out)
            if r is None:
                continue
            if r["max_abs"] > safe_max or r["nonfinite"]:
                kept[node.name] = {"op": node.op_type, "reason": "range", "max_abs": r["max_abs"]}
            elif r["underflow_share"] > UNDERFLOW_SHARE:
                kept[node.name] = {"op": node.op_type, "reason": "underflow",
                                   "underflow_share": round(r["underflow_share"], 4)}
    if keep_final_layers:
        by_name = {n.name: n for n in model.graph.node}
        for name in final_layers(model):
            kept.setdefault(name, {"op": by_name[name].op_type, "reason": "final-layers"})
    for node in model.graph.node:
        if node.op_type in SENSITIVE_OP_TYPES:
            kept.setdefault(node.name, {"op": node.op_type, "reason": "sensitive-op"})
        elif node.op_type in float16.DEFAULT_OP_BLOCK_LIST:
            kept.setdefault(node.name, {"op": node.op_type, "reason": "converter-default"})
        elif node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute):
            kept.setdefault(node.name, {"op": node.op_type, "reason": "cast-to-float"})
    op_block_list = list(dict.fromkeys(float16.DEFAULT_OP_BLOCK_LIST + SENSITIVE_OP_TYPES))
    # the converter's keep_io_types mishandles an output that other nodes also read (our "raw"): convert the
    # shipped single-output graph, then re-attach "raw" for verification
    has_raw = any(o.name == RAW_OUTPUT for o in model.graph.output)
    converted = float16.convert_float_to_float16(drop_output(model) if has_raw else model, keep_io_types=True,
                                                 op_block_list=op_block_list, node_block_list=sorted(kept))
    # the converter leaves stale fp32 value_info beside the fp16 entries of the same tensors (seen after
    # Resize): drop them all and infer again
    del converted.graph.value_info[:]
    import onnx

    converted = onnx.shape_inference.infer_shapes(converted)
    if has_raw:
        raw_info = next(o for o in model.graph.output if o.name == RAW_OUTPUT)
        producer = next(n.name for n in model.graph.node if RAW_OUTPUT in n.output)
        _attach_raw_output(converted, producer, copy.deepcopy(raw_info))
    n16 = _fp16_node_count(converted)
    info = {
        "converter": f"onnxconverter-common {onnxconverter_common.__version__} float16.convert_float_to_float16",
        "keep_io_types": True,
        "op_block_list_added": SENSITIVE_OP_TYPES,
        "safe_max": safe_max,
        "calibration": {"latents": int(calibration_size), "distribution": "z~N(0,I), labels uniform, "
                        "truncation~U(0,1)"},
        "kept_nodes": [{"name": k, **v} for k, v in sorted(kept.items())],
        "nodes_total": len(model.graph.node),
        "nodes_fp16": n16,
    }
    return converted, info


def _fp16_node_count(model) -> int:
    """Nodes (other than Casts) that produce an fp16 tensor."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    f16 = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    return sum(1 for n in model.graph.node if n.op_type != "Cast" and any(o in f16 for o in n.output))
