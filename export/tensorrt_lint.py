"""A TensorRT lint of ONNX graphs that needs neither TensorRT nor a GPU.

Every rule below comes from a document, named beside it; nothing here was learned by running TensorRT:

- **operators**: an op TensorRT's ONNX parser does not support (``N`` in, or absent from, the table), or a
  node in a domain other than ONNX's own (TensorRT parses those only as plugins).
- **types**: a node whose data tensor has a type the op's row does not list ("Supported Types"), DOUBLE
  anywhere (a warning: "limited support", cast down to FLOAT), and UINT8 outside the network's I/O:
  "UINT8 is only supported as network input or output tensor types" (operators.md), reached through a Cast
  or Identity ("kUINT8 ... only for network-level inputs ... or an intermediate output before a kUINT8
  network-level output", NvInferRuntimeBase.h).
- **restrictions**: the table's "Restrictions" that a generator can meet: Resize modes, constant
  ``axes`` of reductions and (Un)Squeeze, LayerNormalization's single output, 2D/3D pooling without
  dilation, TopK ``sorted``, ScatterND without reduction.
- **opset**: the default domain's opset outside what the targeted TensorRT parses.
- **shapes**: what one optimization profile over batch [1, max] cannot cover: a graph input whose rank
  is unknown, whose non-batch dims are not fixed positive sizes, or whose size is 0.
- **qdq** (int8): zero-points must be 0 (operators.md: QuantizeLinear "`y_zero_point` must be 0",
  DequantizeLinear "`x_zero_point` must be zero"); DequantizeLinear reads INT8/FP8/FP4/INT4, not UINT8;
  per-channel scales only on weights ("Per-channel quantization is supported only for weight inputs.
  Activations cannot be quantized per-channel", NvInfer.h IQuantizeLayer/IDequantizeLayer), along the
  weights' output-channel axis (K of KCRS convolution weights, NvInfer.h; K of CKRS deconvolution
  weights, i.e. axis 1 of a ConvTranspose weight); a QuantizeLinear whose output no DequantizeLinear reads
  leaves TensorRT nothing to fuse it with.

Sources (the table is transcribed, not downloaded):

- :data:`OPERATOR_TABLE_SOURCE`: onnx-tensorrt ``docs/operators.md`` at commit 6d0ab7be ("TensorRT 10.15
  supports operators in the inclusive range of opset 9 to opset 24"). It is the newest table published;
  NVIDIA's ONNX Opset Guide for TensorRT 11.x points to the same operators.md as its operator list and
  raises the maximum opset to 25, so the same table is applied to both targets (:data:`TARGETS`).
- NVIDIA/TensorRT 11.1 (commit a892d222) ``include/NvInfer.h`` and ``include/NvInferRuntimeBase.h`` for
  the quantization and UINT8 rules.

``lint_model`` checks one ModelProto; ``lint_bundle`` every ONNX graph of a bundle; ``render`` prints
the findings. A finding names its node, op, rule and source line, so a failing graph says where to look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

OPERATOR_TABLE_SOURCE = ("onnx/onnx-tensorrt docs/operators.md @ 6d0ab7be324d02c7feb3a306b6fdbeae84f71ddc "
                         "(TensorRT 10.15, opsets 9-24)")


@dataclass(frozen=True)
class Target:
    """A TensorRT version the lint checks for: the opsets its parser reads, and where that is written."""

    name: str
    opsets: tuple[int, int]
    source: str


TARGETS: dict[str, Target] = {
    "10": Target("TensorRT 10.x", (9, 24), OPERATOR_TABLE_SOURCE),
    "11": Target("TensorRT 11.x", (9, 25), "NVIDIA ONNX Opset Guide, TensorRT 11.x column (max opset 25; "
                                           "operator list: " + OPERATOR_TABLE_SOURCE + ")"),
}

_F = "FP32 FP16 BF16"
_FI = _F + " INT32 INT64"
_FIB = _FI + " BOOL"
# op -> the "Supported Types" of its row in operators.md (TensorRT 10.15); None: the row says N (unsupported).
# The source's "INF64" (ConstantOfShape) is read as INT64.
_TABLE: dict[str, str | None] = {
    "Abs": _FI, "Acos": _F, "Acosh": _F, "Add": _FI, "AffineGrid": None, "And": "BOOL", "ArgMax": _FI,
    "ArgMin": _FI, "Asin": _F, "Asinh": _F, "Atan": _F, "Atanh": _F, "Attention": _F + " INT8 FP8",
    "AveragePool": _F, "BatchNormalization": _F, "Bernoulli": None, "BitShift": None, "BitwiseAnd": None,
    "BitwiseNot": None, "BitwiseOr": None, "BitwiseXor": None, "BlackmanWindow": "FP32 FP16",
    "Cast": _FI + " UINT8 BOOL", "CastLike": _FI + " UINT8 BOOL", "Ceil": _F, "Col2Im": None, "Celu": _F,
    "CenterCropPad": None, "Clip": _F, "Compress": None, "Concat": _FIB, "ConcatFromSequence": None,
    "Constant": _F + " FP8 FP4 INT4 INT32 INT64 BOOL", "ConstantOfShape": _F + " FP8 FP4 INT4 INT32 INT64 BOOL",
    "Conv": _F, "ConvInteger": None, "ConvTranspose": _F, "Cos": _F, "Cosh": _F, "CumSum": _F, "DFT": None,
    "DeformConv": "FP32 FP16", "DepthToSpace": _FI, "DequantizeLinear": "INT8 FP8 FP4 INT4", "Det": None,
    "Div": _FI, "Dropout": _F, "DynamicQuantizeLinear": None, "Einsum": _F, "Elu": _F, "Equal": _FI, "Erf": _F,
    "Exp": _F, "Expand": _FIB, "EyeLike": _FIB, "Flatten": _FIB, "Floor": _F, "Gather": _FIB,
    "GatherElements": _FIB, "GatherND": _FIB, "Gelu": _F + " INT8 INT32 INT64", "Gemm": _F,
    "GlobalAveragePool": _F, "GlobalLpPool": _F, "GlobalMaxPool": _F, "Greater": _FI, "GreaterOrEqual": _FI,
    "GridSample": "FP32 FP16", "GroupNormalization": _F, "GRU": _F, "HammingWindow": "FP32 FP16",
    "HannWindow": "FP32 FP16", "HardSigmoid": _F, "HardSwish": _F, "Hardmax": _F, "Identity": _FIB, "If": _FIB,
    "ImageScaler": _F, "ImageDecoder": None, "InstanceNormalization": _F, "IsInf": _F, "IsNaN": _FI,
    "LayerNormalization": _F, "LeakyRelu": _F, "Less": _FI, "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F,
    "Loop": _FIB, "LRN": _F, "LSTM": _F, "LpNormalization": _F, "LpPool": _F, "MatMul": _F,
    "MatMulInteger": None, "Max": _FI, "MaxPool": _F, "MaxRoiPool": None, "MaxUnpool": None,
    "Mean": _F + " FP8 INT32 INT64", "MeanVarianceNormalization": _F, "MelWeightMatrix": None, "Min": _FI,
    "Mish": "FP32 FP16", "Mod": _FI, "Mul": _FI, "Multinomial": None, "Neg": _FI,
    "NegativeLogLikelihoodLoss": None, "NonMaxSuppression": "FP32 FP16", "NonZero": "FP32 FP16", "Not": "BOOL",
    "OneHot": _FIB, "Optional": None, "OptionalGetElement": None, "OptionalHasElement": None, "Or": "BOOL",
    "Pad": _FI, "ParametricSoftplus": _F, "Pow": _FI, "PRelu": _F, "QLinearConv": None, "QLinearMatMul": None,
    "QuantizeLinear": _F, "RandomNormal": _F, "RandomNormalLike": _F, "RandomUniform": _F,
    "RandomUniformLike": _F, "Range": _FI, "Reciprocal": _F, "ReduceL1": _FI, "ReduceL2": _FI,
    "ReduceLogSum": _FI, "ReduceLogSumExp": _FI, "ReduceMax": _FI, "ReduceMean": _FI, "ReduceMin": _FI,
    "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "RegexFullMatch": None, "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "ReverseSequence": _FIB, "RMSNormalization": _F, "RNN": _F,
    "RoiAlign": "FP32 FP16", "RotaryEmbedding": _F, "Round": _F, "STFT": "FP32", "ScaledTanh": _F, "Scan": _F,
    "Scatter": _FI, "ScatterElements": _FI, "ScatterND": _FI, "Selu": _F, "SequenceAt": None,
    "SequenceConstruct": None, "SequenceEmpty": None, "SequenceErase": None, "SequenceInsert": None,
    "SequenceLength": None, "SequenceMap": None, "Shape": _FIB, "Shrink": _FI, "Sigmoid": _F, "Sign": _FI,
    "Sin": _F, "Sinh": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "SoftmaxCrossEntropyLoss": None,
    "Softplus": _F, "Softsign": _F, "SpaceToDepth": _FI, "Split": _FIB, "SplitToSequence": None, "Sqrt": _F,
    "Squeeze": _FIB, "StringConcat": None, "StringNormalizer": None, "StringSplit": None, "Sub": _FI, "Sum": _FI,
    "Tan": _F, "Tanh": _F, "TensorScatter": _F + " INT32", "TfIdfVectorizer": None, "ThresholdedRelu": _F,
    "Tile": _FIB, "TopK": _FI, "Transpose": _FIB, "Trilu": _FIB, "Unique": None, "Unsqueeze": _FIB,
    "Upsample": _F, "Where": _FIB, "Xor": "BOOL",
}
OPERATORS: dict[str, frozenset[str] | None] = {op: None if t is None else frozenset(t.split())
                                               for op, t in _TABLE.items()}

# which tensor of a node carries the type its row lists: (inputs|outputs, index); default the first input
_TYPED_TENSOR = {"Where": ("input", 1), "Constant": ("output", 0), "ConstantOfShape": ("output", 0),
                 "RandomNormal": ("output", 0), "RandomUniform": ("output", 0), "EyeLike": ("output", 0)}
_RESIZE = {"mode": {"nearest", "linear"},
           "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                              "asymmetric", "align_corners"},
           "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
           "keep_aspect_ratio_policy": {"stretch"}}
# weighted op -> (index of its weight input, the weight's output-channel axis)
_WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1)}


@dataclass(frozen=True)
class Finding:
    level: str  # "error": TensorRT is documented to refuse it; "warning": documented as limited
    rule: str  # operators, types, restrictions, opset, shapes, qdq
    node: str | None
    op: str | None
    message: str

    def line(self) -> str:
        where = f"{self.node} ({self.op})" if self.node else "graph"
        return f"{self.level}: {where}: {self.message} [{self.rule}]"


def _type_names() -> dict[int, str]:
    from onnx import TensorProto as P

    names = {P.FLOAT: "FP32", P.FLOAT16: "FP16", P.BFLOAT16: "BF16", P.INT32: "INT32", P.INT64: "INT64",
             P.INT8: "INT8", P.UINT8: "UINT8", P.BOOL: "BOOL", P.DOUBLE: "DOUBLE", P.INT16: "INT16",
             P.UINT16: "UINT16", P.UINT32: "UINT32", P.UINT64: "UINT64", P.STRING: "STRING"}
    for attr, name in (("FLOAT8E4M3FN", "FP8"), ("INT4", "INT4"), ("FLOAT4E2M1", "FP4")):
        if hasattr(P, attr):
            names[getattr(P, attr)] = name
    return names


class _Graph:
    """One graph's nodes, tensor types, constants, producers and consumers (after ONNX shape inference)."""

    def __init__(self, model) -> None:
        import onnx

        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - a graph shape inference cannot read is still linted, with fewer types
            pass
        g = model.graph
        names = _type_names()
        self.model = model
        self.nodes = list(g.node)
        self.inputs = {i.name: i for i in g.input}
        self.outputs = {o.name: o for o in g.output}
        self.initializers = {i.name: i for i in g.initializer}
        self.types: dict[str, str] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            t = vi.type.tensor_type.elem_type
            if t:
                self.types[vi.name] = names.get(t, f"type {t}")
        for init in g.initializer:
            self.types[init.name] = names.get(init.data_type, f"type {init.data_type}")
        self.constants = set(self.initializers)
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
            if n.op_type == "Constant":
                self.constants.update(n.output)

    def type_of(self, node, side: str, index: int) -> str | None:
        names = node.input if side == "input" else node.output
        return self.types.get(names[index]) if index < len(names) and names[index] else None

    def constant_array(self, name: str):
        """The value of a constant tensor (an initializer or a Constant node's output), else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _name(node, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def lint_model(model, *, target: str = "11") -> list[Finding]:
    """Findings of one ONNX ModelProto against :data:`TARGETS` ``target`` ("10" or "11"), errors first."""
    if target not in TARGETS:
        raise ValueError(f"unknown TensorRT target {target!r}; choose one of {', '.join(TARGETS)}")
    g = _Graph(model)
    found: list[Finding] = []
    found += _opset(g, TARGETS[target])
    found += _shapes(g)
    for i, node in enumerate(g.nodes):
        found += _node(g, node, _name(node, i))
    found += _uint8(g)
    found += _qdq(g)
    return sorted(found, key=lambda f: f.level != "error")


def _opset(g: _Graph, target: Target) -> list[Finding]:
    lo, hi = target.opsets
    for imp in g.model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            return [Finding("error", "opset", None, None,
                            f"opset {imp.version}: {target.name} parses opsets {lo}-{hi} ({target.source})")]
    return []


def _shapes(g: _Graph) -> list[Finding]:
    out = []
    for name, vi in g.inputs.items():
        if name in g.initializers:
            continue
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            out.append(Finding("error", "shapes", None, None, f"input {name!r} has no known rank: an optimization "
                                                              "profile needs the rank of every input"))
            continue
        dims = list(t.shape.dim)
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value <= 0:
                out.append(Finding("error", "shapes", None, None, f"input {name!r} dim {k} is {d.dim_value}: "
                                                                  "no profile covers a size of 0"))
            elif k > 0 and not d.HasField("dim_value"):
                out.append(Finding("error", "shapes", None, None,
                                   f"input {name!r} dim {k} is dynamic ({d.dim_param or '?'}): the profile covers "
                                   "only the batch axis (dim 0); export it with fixed image and latent sizes"))
    return out


def _node(g: _Graph, node, name: str) -> list[Finding]:
    op, out = node.op_type, []
    if node.domain not in ("", "ai.onnx"):
        return [Finding("error", "operators", name, op, f"op {node.domain}::{op} is not an ONNX op: TensorRT's "
                                                        "parser reads it only as a plugin, which ganrt does not ship")]
    if op not in OPERATORS:
        return [Finding("error", "operators", name, op, f"{op} is not in TensorRT's ONNX operator table "
                                                        f"({OPERATOR_TABLE_SOURCE})")]
    types = OPERATORS[op]
    if types is None:
        return [Finding("error", "operators", name, op, f"TensorRT does not support {op} ({OPERATOR_TABLE_SOURCE})")]
    checks = [_TYPED_TENSOR.get(op, ("input", 0))] + ([("output", 0)] if op in ("Cast", "CastLike") else [])
    for side, index in checks:
        t = g.type_of(node, side, index)
        if t is not None and t not in types and not (t == "DOUBLE" and "FP32" in types):
            out.append(Finding("error", "types", name, op, f"{side} {index} is {t}; TensorRT's {op} takes "
                                                           f"{', '.join(sorted(types))}"))
    for tensor in [*node.input, *node.output]:
        if g.types.get(tensor) == "DOUBLE":
            out.append(Finding("warning", "types", name, op, f"{tensor!r} is DOUBLE: TensorRT casts it down to "
                                                             "FLOAT, clamping to +-FLT_MAX"))
            break
    return out + _restrictions(g, node, name)


def _restrictions(g: _Graph, node, name: str) -> list[Finding]:
    op, out = node.op_type, []

    def bad(text: str) -> None:
        out.append(Finding("error", "restrictions", name, op, text))

    if op == "Resize":
        for attr, allowed in _RESIZE.items():
            value = _attr(node, attr)
            if value is not None and value not in allowed:
                bad(f"{attr} {value!r}: TensorRT supports {', '.join(sorted(allowed))}")
        if _attr(node, "antialias", 0):
            bad("antialias is not supported")
    elif op.startswith("Reduce") and len(node.input) > 1 and node.input[1] and node.input[1] not in g.constants:
        bad("axes must be an initializer")
    elif op in ("Squeeze", "Unsqueeze") and len(node.input) > 1 and node.input[1] not in g.constants:
        bad("axes must be resolvable to a constant")
    elif op == "LayerNormalization" and sum(1 for o in node.output if o) > 1:
        bad("only the first output (Y) is supported")
    elif op in ("AveragePool", "MaxPool"):
        kernel = _attr(node, "kernel_shape") or []
        if len(kernel) not in (2, 3):
            bad(f"{len(kernel)}D pooling: TensorRT pools in 2D or 3D only")
        if any(d != 1 for d in _attr(node, "dilations") or []):
            bad("dilations must be empty or all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            bad("the Indices output is not supported")
    elif op == "TopK" and _attr(node, "sorted", 1) != 1:
        bad("sorted must be 1")
    elif op == "ScatterND" and _attr(node, "reduction", "none") != "none":
        bad("reduction other than 'none' is not supported")
    return out


def _uint8(g: _Graph) -> list[Finding]:
    """UINT8 only at the network's edge: a graph output made by Cast/Identity, or a graph input read only by
    Cast/Identity."""
    out = []
    for tensor, t in g.types.items():
        if t != "UINT8" or tensor in g.initializers:
            continue
        producer = g.producer.get(tensor)
        readers = g.consumers.get(tensor, [])
        if tensor in g.outputs and (producer is None or producer.op_type in ("Cast", "Identity")) and not readers:
            continue
        if tensor in g.inputs and all(r.op_type in ("Cast", "Identity") for r in readers):
            continue
        node = producer or (readers[0] if readers else None)
        reader = next((r for r in readers if r.op_type not in ("Cast", "Identity")), None)
        if reader is not None:
            why = f"UINT8 tensor {tensor!r} is read by {reader.op_type} {reader.name!r}"
        elif tensor in g.outputs:
            why = f"UINT8 output {tensor!r} is made by {producer.op_type}, not by a Cast or Identity"
        else:
            why = f"UINT8 tensor {tensor!r} is not a network input or output"
        out.append(Finding("error", "types", node.name if node is not None else None,
                           node.op_type if node is not None else None,
                           f"{why}: TensorRT takes UINT8 only as a network input or output (cast to float "
                           "before any other op, cast to UINT8 last)"))
    return out


def _qdq(g: _Graph) -> list[Finding]:
    out = []
    for i, node in enumerate(g.nodes):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name, op = _name(node, i), node.op_type
        if len(node.input) > 2 and node.input[2]:
            zp = g.constant_array(node.input[2])
            if zp is None or zp.any():
                out.append(Finding("error", "qdq", name, op, "the zero-point must be 0 (TensorRT quantizes "
                                                             "symmetrically)"))
        scale = g.constant_array(node.input[1]) if len(node.input) > 1 else None
        per_channel = scale is not None and scale.ndim == 1 and scale.size > 1
        if op == "QuantizeLinear":
            readers = g.consumers.get(node.output[0], [])
            if not readers or any(r.op_type != "DequantizeLinear" for r in readers):
                out.append(Finding("error", "qdq", name, op, "its output is not read by a DequantizeLinear: "
                                                             "TensorRT has no Q/DQ pair to fuse"))
            if per_channel and node.input[0] not in g.constants:
                out.append(Finding("error", "qdq", name, op, "per-channel scales on an activation: TensorRT "
                                                             "quantizes only weights per channel"))
            continue
        rooted_at_weights = node.input[0] in g.constants or (
            (q := g.producer.get(node.input[0])) is not None and q.op_type == "QuantizeLinear"
            and q.input[0] in g.constants)
        if per_channel and not rooted_at_weights:
            out.append(Finding("error", "qdq", name, op, "per-channel scales on an activation: TensorRT "
                                                         "dequantizes only weights per channel"))
        if per_channel:
            out += _weight_axis(g, node, name)
    return out


def _weight_axis(g: _Graph, dq, name: str) -> list[Finding]:
    """A per-channel weight DequantizeLinear must run along its consumer's output-channel axis."""
    axis = int(_attr(dq, "axis", 1))
    out = []
    for reader in g.consumers.get(dq.output[0], []):
        if reader.op_type not in _WEIGHT_AXIS:
            continue
        index, want = _WEIGHT_AXIS[reader.op_type]
        if index < len(reader.input) and reader.input[index] == dq.output[0] and axis != want:
            layout = "KCRS" if reader.op_type == "Conv" else "CKRS"
            out.append(Finding("error", "qdq", name, dq.op_type,
                               f"per-channel axis {axis} on the weights of {reader.op_type} {reader.name!r}: "
                               f"TensorRT scales {layout} weights along K, axis {want}"))
    return out


# -- bundles -----------------------------------------------------------------------------------------------
def lint_files(files: dict[str, Any], targets: Iterable[str] = tuple(TARGETS)) -> dict[str, Any]:
    """{label: ONNX file} against each target: {"targets", "source", "graphs": {label: [finding dicts, each
    with the "targets" it holds for]}, "errors", "warnings"}."""
    import onnx

    targets = list(targets)
    graphs: dict[str, list[dict[str, Any]]] = {}
    for label, path in files.items():
        model = onnx.load(str(path))
        merged: dict[Finding, list[str]] = {}
        for t in targets:
            for f in lint_model(model, target=t):
                merged.setdefault(f, []).append(t)
        graphs[label] = [{**asdict(f), "targets": ts} for f, ts in merged.items()]
    levels = [f["level"] for fs in graphs.values() for f in fs]
    return {"targets": targets, "source": OPERATOR_TABLE_SOURCE, "graphs": graphs,
            "errors": levels.count("error"), "warnings": levels.count("warning")}


def lint_bundle(bundle, targets: Iterable[str] = tuple(TARGETS)) -> dict[str, Any]:
    """:func:`lint_files` over every ONNX graph of ``bundle``."""
    return lint_files({name: bundle.artifact_path(name) for name, entry in sorted(bundle.artifacts.items())
                       if entry.get("kind") == "onnx"}, targets)


def _line(f: dict[str, Any], all_targets: list[str]) -> str:
    text = Finding(**{k: v for k, v in f.items() if k != "targets"}).line()
    if len(f["targets"]) < len(all_targets):
        text += f" (only {', '.join(TARGETS[t].name for t in f['targets'])})"
    return text


def verdict(report: dict[str, Any]) -> str:
    """One line: how many graphs lint clean for which TensorRT, or the first error."""
    names = ", ".join(TARGETS[t].name for t in report["targets"])
    errors = [(label, f) for label, fs in report["graphs"].items() for f in fs if f["level"] == "error"]
    if not errors:
        return f"{len(report['graphs'])} graph(s) lint clean for {names}"
    label, f = errors[0]
    return f"{len(errors)} TensorRT lint error(s) ({names}), first: {label}: {_line(f, report['targets'])}"


def render(report: dict[str, Any]) -> str:
    """A lint report as lines: one per finding, each graph named."""
    lines = [f"TensorRT lint ({', '.join(TARGETS[t].name for t in report['targets'])}; operator table: "
             f"{report['source']})"]
    for label, findings in report["graphs"].items():
        lines += [f"  {label}: {_line(f, report['targets'])}" for f in findings] or [f"  {label}: clean"]
    lines.append(f"{report['errors']} error(s), {report['warnings']} warning(s)")
    return "\n".join(lines)
