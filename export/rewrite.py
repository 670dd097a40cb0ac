"""The ConvTranspose rewrite: an exact ONNX graph pass for CPU backends whose fast kernels skip deconvolution.

A stride-``s`` ConvTranspose with kernel ``k = s * T`` and symmetric pad ``p`` computes, for each of the
``s x s`` output phases, an ordinary ``T x T`` correlation of its input with one slice of the (flipped)
kernel. All phases share one input window once the input is padded by ``T - 1 - p // s``, so the node
becomes::

    Conv(stride 1, s*s*C_out channels, T x T kernels, pads T-1-p//s) -> [activation]
        -> DepthToSpace(s, CRD) -> Slice(p % s from every border, only when p % s > 0)

exact in real arithmetic (float results differ by summation order only). The kernels are the
ConvTranspose taps, so the MACs per computed pixel are the same; the padded border adds
``(H + T - 1 - 2 * (p // s)) / H`` per spatial axis (1.25 for a 4x4 input with k=4, s=2, p=1), reported per
node as ``macs_ratio`` when the input's size is known. ``form="phases"`` avoids that border work: one
Conv per output phase with its own (asymmetric) pads, then Concat -> [activation] -> DepthToSpace(s, DCR),
at the cost of s*s smaller convolutions. ``form="auto"`` picks per node: phases when the node has at least
``PHASES_MIN_CHANNELS`` output channels, else single (a phase convolution with fewer output channels than a
SIMD vector has lanes wastes most of each vector: a generator's last, 1- or 3-channel layer). A ConvTranspose
whose input is 1x1 (a generator's first layer)
becomes ``Flatten -> Gemm -> [activation] -> Reshape``: a plain matrix product.

Why: OpenVINO's bf16 CPU kernels cover convolution but not deconvolution, so on a bf16-capable CPU the
rewritten graph runs in bf16 and the original in f32 (docs/export-notes.md). Whether it pays for another
backend is a measurement (docs/export-notes.md found onnxruntime 1.3-1.6x slower on it): apply it per backend.
Run it on the simplified float graph (after onnxslim, which folds BatchNorm into the ConvTranspose and
removes Identity nodes in front of weights), before fp16 conversion or quantization.

An elementwise activation (Relu, LeakyRelu, Tanh, Sigmoid) that is the ConvTranspose's only consumer is
applied before the interleave: onnxruntime's QOperator quantizer dropped a Relu that followed a
DepthToSpace (docs/export-notes.md).

Nodes the pass cannot express exactly this way are left as they are, each with its reason in the
report: group != 1, dilations, output_padding, output_shape, auto_pad, asymmetric pads, unequal strides,
a kernel that is not a multiple of the stride, a pad of a kernel's size or more, non-constant weights or
bias, a non-2-D node, an opset below 11.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganrt.errors import ConfigError

DOMAIN_ONNX = ("", "ai.onnx")
MOVABLE_ACTIVATIONS = ("Relu", "LeakyRelu", "Tanh", "Sigmoid")
FORMS = ("single", "phases", "auto")
# form "auto": phases from this many output channels (16 fp32 lanes in an AVX-512 vector). Measured on the demo
# generator (channels 64 -> 32 -> 1; OpenVINO, 2-core AVX-512 CPU, batch 64, one run): phases for the 64- and
# 32-channel layers and single for the 1-channel one ran 0.83-0.84x the all-phases graph and 0.74-0.84x the
# all-single one in int8 (NNCF), 0.97x and 0.83x in bf16. At batch 1 the all-single graph was fastest (fewer
# nodes): ganrt export ships it as the int8 small-batch graph.
PHASES_MIN_CHANNELS = 16
MIN_OPSET = 11  # DepthToSpace "mode" (CRD) and Slice with tensor inputs
_INT64_MAX = np.iinfo(np.int64).max


@dataclass
class RewriteReport:
    """Which ConvTranspose nodes were rewritten (and into what) and which were left, and why.

    ``rewritten``: ``{"node", "into", "kernel", "stride", "pads", "activation", "macs_ratio"}`` per node;
    ``left``: ``{"node", "reason"}``. Plain JSON values, for the bundle manifest.
    """

    rewritten: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    form: str = "single"

    @property
    def changed(self) -> bool:
        return bool(self.rewritten)

    def to_dict(self) -> dict[str, Any]:
        return {"pass": "conv-transpose-rewrite", "form": self.form, "rewritten": [dict(r) for r in self.rewritten],
                "left": [dict(r) for r in self.left]}


def rewrite_conv_transpose(model, *, form: str = "single") -> tuple[Any, RewriteReport]:
    """Rewrite every ConvTranspose of ``model``'s main graph that can be expressed exactly (see module doc).

    ``form="single"``: one Conv with s*s times the channels + DepthToSpace (+ Slice); ``form="phases"``:
    one Conv per output phase, each with its own pads (no border work: exactly the ConvTranspose's MACs),
    Concat + DepthToSpace(DCR); ``form="auto"``: phases for nodes with at least ``PHASES_MIN_CHANNELS``
    output channels, single for the others. ``model`` (an onnx.ModelProto) is not changed; returns a rewritten copy and
    the report. Inputs, outputs and their (dynamic) shapes are those of the original graph.
    """
    import onnx

    if form not in FORMS:
        raise ConfigError(f"rewrite form must be one of {FORMS}, got {form!r}")

    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = RewriteReport(form=form)
    graph = out.graph
    old_nodes = list(graph.node)  # one list of the node objects, so identities hold below
    convt = [i for i, n in enumerate(old_nodes) if n.op_type == "ConvTranspose" and n.domain in DOMAIN_ONNX]
    if not convt:
        return out, report

    opset = _onnx_opset(out)
    if opset < MIN_OPSET:
        for i in convt:
            report.left.append({"node": _node_name(old_nodes[i], i), "reason": f"opset {opset} < {MIN_OPSET} (no "
                                "DepthToSpace with a mode); export with opset >= 11"})
        return out, report

    # a graph input of the same name overrides an initializer at run time: not a constant then
    overridable = {v.name for v in graph.input}
    initializers = {t.name: t for t in graph.initializer if t.name not in overridable}
    shapes = _inferred_shapes(out)
    consumers: dict[str, list] = {}
    for n in old_nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    names = _Names(out)

    new_nodes: list = []
    new_initializers: list = []
    absorbed: set[int] = set()  # id() of activation nodes folded into a rewrite
    replaced_inputs: set[str] = set()
    for index, node in enumerate(old_nodes):
        if id(node) in absorbed:
            continue
        if node.op_type != "ConvTranspose" or node.domain not in DOMAIN_ONNX:
            new_nodes.append(node)
            continue
        name = _node_name(node, index)
        plan = _plan(node, initializers, shapes, form)
        if isinstance(plan, str):
            report.left.append({"node": name, "reason": plan})
            new_nodes.append(node)
            continue
        activation = _sole_activation(node, consumers, graph_outputs)
        if activation is not None:
            absorbed.add(id(activation))
        nodes, inits = _build(plan, node, name, activation, names)
        new_nodes.extend(nodes)
        new_initializers.extend(inits)
        replaced_inputs.update(node.input[1:])
        report.rewritten.append({"node": name, "into": plan.into, "kernel": plan.kernel, "stride": plan.stride,
                                 "pads": plan.pads, "activation": activation.op_type if activation else None,
                                 "macs_ratio": plan.macs_ratio})

    if not report.rewritten:
        return out, report
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_initializers)
    _drop_unused(out, replaced_inputs)
    return out, report


# ---------------------------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    into: str  # "Conv+DepthToSpace", "Conv" (stride 1) or "Gemm+Reshape" (1x1 input)
    kernel: list[int]
    stride: int
    pads: list[int]
    weight: np.ndarray  # Conv: (s*s*C_out, C_in, Th, Tw); Gemm: (C_in, C_out*oh*ow)
    bias: np.ndarray | None  # (channels of the new Conv / Gemm columns,)
    conv_pads: list[int] | None = None
    phases: list[tuple[np.ndarray, list[int]]] | None = None  # form "phases": (weight, pads) per output phase
    crop: list[int] | None = None  # per spatial axis, removed from both ends after DepthToSpace
    out_shape: list[int] | None = None  # Gemm: (C_out, oh, ow)
    macs_ratio: float | None = None


def _plan(node, initializers: dict, shapes: dict, form: str = "single") -> _Plan | str:
    """The rewrite of ``node``, or the reason it is left unchanged."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if len(node.input) < 2 or node.input[1] not in initializers:
        return ("weight is not a constant initializer (a quantized graph, or Identity/Constant nodes): rewrite the "
                "float graph after onnxslim, which folds those")
    weight = numpy_helper.to_array(initializers[node.input[1]])
    if weight.ndim != 4:
        return f"only 2-D ConvTranspose is rewritten, this one is {weight.ndim - 2}-D"
    if not np.issubdtype(weight.dtype, np.floating):
        return f"weight dtype {weight.dtype} is not floating point"
    bias = None
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in initializers:
            return "bias is not a constant initializer"
        bias = numpy_helper.to_array(initializers[node.input[2]])
    c_in, c_out_per_group, kh, kw = weight.shape
    group = int(attrs.get("group", 1))
    if group != 1:
        return f"group={group}: only group=1 is rewritten"
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad != "NOTSET":
        return f"auto_pad={auto_pad}: only explicit pads are rewritten"
    if "output_shape" in attrs:
        return "output_shape is set: only explicit pads are rewritten"
    kernel = [int(k) for k in attrs.get("kernel_shape", [kh, kw])]
    if kernel != [kh, kw]:
        return f"kernel_shape {kernel} disagrees with the weight's {[kh, kw]}"
    dilations = [int(d) for d in attrs.get("dilations", [1, 1])]
    if any(d != 1 for d in dilations):
        return f"dilations {dilations}: only dilation 1 is rewritten"
    output_padding = [int(o) for o in attrs.get("output_padding", [0, 0])]
    if any(o != 0 for o in output_padding):
        return f"output_padding {output_padding}: not rewritten"
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    if pads[:2] != pads[2:]:
        return f"asymmetric pads {pads}: not rewritten"
    ph, pw = pads[:2]
    strides = [int(s) for s in attrs.get("strides", [1, 1])]

    in_shape = shapes.get(node.input[0])
    spatial = in_shape[2:] if in_shape is not None and len(in_shape) == 4 else None
    if spatial == [1, 1]:  # a first layer: every output pixel reads the one input pixel
        if 2 * ph >= kh or 2 * pw >= kw:
            return f"pads {pads} leave no output of a {kh}x{kw} kernel"
        oh, ow = kh - 2 * ph, kw - 2 * pw
        w = weight[:, :, ph:kh - ph, pw:kw - pw].reshape(c_in, c_out_per_group * oh * ow)  # (C_in, C_out*oh*ow)
        b = None if bias is None else np.repeat(bias, oh * ow)
        return _Plan("Gemm+Reshape", [kh, kw], strides[0], pads, w, b, out_shape=[c_out_per_group, oh, ow],
                     macs_ratio=1.0)

    if strides[0] != strides[1]:
        return f"strides {strides} differ: DepthToSpace takes one block size"
    s = strides[0]
    if kh % s or kw % s:
        return f"kernel {[kh, kw]} is not a multiple of the stride {s}"
    if ph >= kh or pw >= kw:
        return f"pads {pads} are not smaller than the kernel {[kh, kw]}"
    th, tw = kh // s, kw // s
    pad_h, pad_w = th - 1 - ph // s, tw - 1 - pw // s  # symmetric: begin = end (see module doc)
    crop = [ph % s, pw % s]
    # phase (rh, rw) of output channel co sits at channel co*s*s + rh*s + rw (DepthToSpace CRD); its tap t
    # reads ConvTranspose tap r + s*(T-1-t): the kernel flipped, one phase of it per output channel block
    idx_h = np.arange(s)[:, None] + s * (th - 1 - np.arange(th))[None, :]  # (s, Th)
    idx_w = np.arange(s)[:, None] + s * (tw - 1 - np.arange(tw))[None, :]  # (s, Tw)
    w = weight[:, :, idx_h[:, :, None, None], idx_w[None, None, :, :]]  # (C_in, C_out, s, Th, s, Tw)
    w = w.transpose(1, 2, 4, 0, 3, 5).reshape(c_out_per_group * s * s, c_in, th, tw)
    b = None if bias is None else np.repeat(bias, s * s)
    ratio = None
    if spatial is not None and all(isinstance(d, int) and d > 0 for d in spatial):
        h, wd = spatial
        ratio = round((h + 2 * pad_h - th + 1) * (wd + 2 * pad_w - tw + 1) / (h * wd), 4)
    if form == "auto":
        form = "phases" if c_out_per_group >= PHASES_MIN_CHANNELS else "single"
    if form == "phases" and s > 1:
        phases = _phase_convs(weight, s, ph, pw)
        if phases is not None:
            return _Plan("Conv-per-phase+DepthToSpace", [kh, kw], s, pads, phases[0][0], bias, phases=phases,
                         macs_ratio=1.0)
    return _Plan("Conv+DepthToSpace" if s > 1 else "Conv", [kh, kw], s, pads, np.ascontiguousarray(w), b,
                 conv_pads=[pad_h, pad_w, pad_h, pad_w], crop=crop, macs_ratio=ratio)


def _phase_convs(weight: np.ndarray, s: int, ph: int, pw: int) -> list[tuple[np.ndarray, list[int]]] | None:
    """One (C_out, C_in, Th, Tw) kernel and its Conv pads per output phase (rh, rw), row-major; None when
    the phases differ in size (the output size is not a multiple of s: 2p % s != 0) or a phase would need a
    negative pad (a pad of nearly the kernel's size): the single form covers those."""
    _, _, kh, kw = weight.shape
    if (2 * ph) % s or (2 * pw) % s:
        return None

    def axis(k: int, p: int) -> list[tuple[np.ndarray, int, int]]:
        t = k // s
        out = []
        for r in range(s):
            taps = (r + p) % s + s * (t - 1 - np.arange(t))  # flipped taps of this phase
            begin = t - 1 - (r + p) // s
            end = -((2 * p + r + s - k) // s) + t - 1 - begin  # ceil((k - s - 2p - r) / s) + t - 1 - begin
            out.append((taps, begin, end))
        return out

    rows, cols = axis(kh, ph), axis(kw, pw)
    phases = []
    for taps_h, bh, eh in rows:
        for taps_w, bw, ew in cols:
            if min(bh, eh, bw, ew) < 0:
                return None
            w = weight[:, :, taps_h[:, None], taps_w[None, :]].transpose(1, 0, 2, 3)  # (C_out, C_in, Th, Tw)
            phases.append((np.ascontiguousarray(w), [bh, bw, eh, ew]))
    return phases


def _sole_activation(node, consumers: dict, graph_outputs: set):
    """The elementwise activation that is ``node``'s only consumer, or None."""
    out = node.output[0]
    users = consumers.get(out, [])
    if out in graph_outputs or len(users) != 1:
        return None
    act = users[0]
    if act.op_type not in MOVABLE_ACTIVATIONS or act.domain not in DOMAIN_ONNX or list(act.input) != [out]:
        return None
    return act


# ---------------------------------------------------------------------------------------------- building


def _build(plan: _Plan, node, name: str, activation, names: "_Names") -> tuple[list, list]:
    from onnx import helper, numpy_helper

    x, y = node.input[0], node.output[0]
    final = activation.output[0] if activation is not None else y
    tag = names.fresh(name.replace("/", "_") + "_rw")
    nodes, inits = [], []
    bias = []  # [] or [name of the bias initializer]: the optional last input of Conv / Gemm
    if plan.bias is not None:
        inits.append(numpy_helper.from_array(plan.bias.astype(plan.weight.dtype), names.fresh(f"{tag}_bias")))
        bias = [inits[-1].name]
    if plan.phases is None:
        inits.append(numpy_helper.from_array(plan.weight, names.fresh(f"{tag}_weight")))
        weight = inits[-1].name

    def act(inp: str, out: str) -> None:
        nodes.append(helper.make_node(activation.op_type, [inp], [out], name=names.fresh(f"{tag}_{activation.op_type}"),
                                      **{a.name: helper.get_attribute_value(a) for a in activation.attribute}))

    # the chain ends in `final`; stages after the matrix product may be skipped, so name tensors backwards
    if plan.into == "Gemm+Reshape":
        flat, mm = names.fresh(f"{tag}_flat"), names.fresh(f"{tag}_gemm")
        shape = names.fresh(f"{tag}_shape")
        inits.append(numpy_helper.from_array(np.array([0, *plan.out_shape], dtype=np.int64), shape))
        nodes.append(helper.make_node("Flatten", [x], [flat], name=names.fresh(f"{tag}_Flatten"), axis=1))
        nodes.append(helper.make_node("Gemm", [flat, weight, *bias], [mm], name=names.fresh(f"{tag}_Gemm")))
        if activation is not None:
            acted = names.fresh(f"{tag}_act")
            act(mm, acted)
            mm = acted
        nodes.append(helper.make_node("Reshape", [mm, shape], [final], name=names.fresh(f"{tag}_Reshape")))
        return nodes, inits

    s = plan.stride
    if plan.phases is not None:  # Conv per phase -> Concat (phase-major = DCR order) -> [act] -> DepthToSpace
        parts = []
        for i, (w, pads) in enumerate(plan.phases):
            w_name, part = names.fresh(f"{tag}_weight_p{i}"), names.fresh(f"{tag}_conv_p{i}")
            inits.append(numpy_helper.from_array(w, w_name))
            nodes.append(helper.make_node("Conv", [x, w_name, *bias], [part], name=names.fresh(f"{tag}_Conv_p{i}"),
                                          kernel_shape=list(w.shape[2:]), strides=[1, 1], pads=pads,
                                          dilations=[1, 1], group=1))
            parts.append(part)
        cat = names.fresh(f"{tag}_concat")
        nodes.append(helper.make_node("Concat", parts, [cat], name=names.fresh(f"{tag}_Concat"), axis=1))
        if activation is not None:
            acted = names.fresh(f"{tag}_act")
            act(cat, acted)
            cat = acted
        nodes.append(helper.make_node("DepthToSpace", [cat], [final], name=names.fresh(f"{tag}_DepthToSpace"),
                                      blocksize=s, mode="DCR"))
        return nodes, inits

    crop = any(plan.crop)
    steps = ["conv"] + (["act"] if activation is not None else []) + (["d2s"] if s > 1 else []) + \
        (["slice"] if crop else [])
    outs = {step: names.fresh(f"{tag}_{step}") for step in steps[:-1]}
    outs[steps[-1]] = final
    th, tw = plan.weight.shape[2:]
    nodes.append(helper.make_node("Conv", [x, weight, *bias], [outs["conv"]], name=names.fresh(f"{tag}_Conv"),
                                  kernel_shape=[th, tw], strides=[1, 1], pads=plan.conv_pads, dilations=[1, 1],
                                  group=1))
    prev = outs["conv"]
    if activation is not None:
        act(prev, outs["act"])
        prev = outs["act"]
    if s > 1:
        nodes.append(helper.make_node("DepthToSpace", [prev], [outs["d2s"]], name=names.fresh(f"{tag}_DepthToSpace"),
                                      blocksize=s, mode="CRD"))
        prev = outs["d2s"]
    if crop:
        ch, cw = plan.crop
        starts, ends, axes = names.fresh(f"{tag}_starts"), names.fresh(f"{tag}_ends"), names.fresh(f"{tag}_axes")
        inits += [numpy_helper.from_array(np.array([ch, cw], dtype=np.int64), starts),
                  numpy_helper.from_array(np.array([-ch if ch else _INT64_MAX, -cw if cw else _INT64_MAX],
                                                   dtype=np.int64), ends),
                  numpy_helper.from_array(np.array([2, 3], dtype=np.int64), axes)]
        nodes.append(helper.make_node("Slice", [prev, starts, ends, axes], [outs["slice"]],
                                      name=names.fresh(f"{tag}_Slice")))
    return nodes, inits


# ---------------------------------------------------------------------------------------------- helpers


class _Names:
    """Fresh tensor/node names that collide with nothing in the model."""

    def __init__(self, model) -> None:
        g = model.graph
        self.used = {n.name for n in g.node} | {t.name for t in g.initializer} | {v.name for v in g.value_info}
        self.used |= {v.name for v in g.input} | {v.name for v in g.output}
        for n in g.node:
            self.used.update(n.input)
            self.used.update(n.output)

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name


def _node_name(node, index: int) -> str:
    return node.name or f"ConvTranspose#{index}"


def _onnx_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in DOMAIN_ONNX:
            return int(imp.version)
    return 1


def _inferred_shapes(model) -> dict[str, list]:
    """name -> dims (int, or the dim_param string / None when unknown) from ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an unusual graph: plan without sizes (the 1x1 Gemm form and macs_ratio need them)
        inferred = model
    g = inferred.graph
    shapes = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _drop_unused(model, candidates: set[str]) -> None:
    """Remove initializers among ``candidates`` that nothing reads any more, and value_info of gone tensors."""
    import onnx

    g = model.graph
    read = {o.name for o in g.output}

    def collect(graph) -> None:
        for n in graph.node:
            read.update(n.input)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        collect(sub)

    collect(g)
    keep = [t for t in g.initializer if t.name not in candidates or t.name in read]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
    produced = {o for n in g.node for o in n.output} | {v.name for v in g.input} | {t.name for t in g.initializer}
    vi = [v for v in g.value_info if v.name in produced]
    if len(vi) != len(g.value_info):
        del g.value_info[:]
        g.value_info.extend(vi)
