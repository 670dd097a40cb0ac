"""torch -> ONNX: the exported graph's I/O contract, the exporters, and the simplifier.

The exported module is :class:`GraphModule`: the generator with the graph's inputs as explicit
arguments (``z``, [``labels``], [``truncation``]) and the post-processing inside. It returns two
outputs while being verified: ``images`` (what the bundle ships) and ``raw``, the generator's float
output, so verification can count NaN/Inf that the uint8 cast would hide. :func:`drop_output` removes
``raw`` from the graph that is written to the bundle.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganrt.errors import ExportError, SpecError
from ganrt.latents import labels_from_seeds, latents_from_seeds
from ganrt.models import as_ganrt_generator
from ganrt.postprocess import OUTPUT_FORMATS, ToUint8NHWC
from ganrt.spec import CALL_FORMS, GeneratorSpec

RAW_OUTPUT = "raw"  # verification-only output: the generator's float images (B, C, H, W)
EXPORTERS = ("auto", "dynamo", "torchscript")


def graph_description(spec: GeneratorSpec, *, output_format: str, opset: int, max_batch: int) -> dict[str, Any]:
    """The manifest's "graph" entry: what the shipped graphs take and return."""
    inputs = [{"name": "z", "dtype": "float32", "shape": ["batch", spec.latent_dim]}]
    if spec.num_classes > 0:
        inputs.append({"name": "labels", "dtype": "int64", "shape": ["batch"]})
    if spec.has_truncation:
        inputs.append({"name": "truncation", "dtype": "float32", "shape": ["batch"]})
    c, h, w = spec.image_shape
    if output_format == "uint8-nhwc":
        output = {"name": "images", "dtype": "uint8", "shape": ["batch", h, w, c]}
    else:
        output = {"name": "images", "dtype": "float32", "shape": ["batch", c, h, w]}
    return {"inputs": inputs, "outputs": [output], "output_format": output_format, "opset": int(opset),
            "max_batch": int(max_batch), "dynamic_axes": {i["name"]: {"0": "batch"} for i in inputs + [output]}}


def sample_inputs(spec: GeneratorSpec, seeds: list[int], *, truncation: float = 0.7) -> dict[str, np.ndarray]:
    """Graph inputs for ``seeds`` (ganrt.latents): the same seeds give the same feeds on every run."""
    feeds = {"z": latents_from_seeds(seeds, spec.latent_dim)}
    if spec.num_classes > 0:
        feeds["labels"] = labels_from_seeds(seeds, spec.num_classes)
    if spec.has_truncation:
        feeds["truncation"] = np.full((len(seeds),), truncation, dtype=np.float32)
    return feeds


def calibration_inputs(spec: GeneratorSpec, n: int, *, seed: int = 20240601,
                       batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Feeds drawn from the generator's own input distribution, in batches: z ~ N(0, I), labels uniform,
    truncation uniform in [0, 1]. A generator needs no calibration dataset."""
    rng = np.random.Generator(np.random.PCG64(seed))
    feeds = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        f = {"z": rng.standard_normal((b, spec.latent_dim)).astype(np.float32)}
        if spec.num_classes > 0:
            f["labels"] = rng.integers(0, spec.num_classes, size=b).astype(np.int64)
        if spec.has_truncation:
            f["truncation"] = rng.uniform(0.0, 1.0, size=b).astype(np.float32)
        feeds.append(f)
    return feeds


class GraphModule(nn.Module):
    """The generator as the graph sees it: (z[, labels][, truncation]) -> (images, raw) for "uint8-nhwc",
    images (the raw float output) for "float-nchw"."""

    def __init__(self, generator: nn.Module, spec: GeneratorSpec, output_format: str = "uint8-nhwc") -> None:
        super().__init__()
        if output_format not in OUTPUT_FORMATS:
            raise SpecError(f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        # a user's module takes only what it needs; wrapped, it is called like every family's generator
        self.generator = as_ganrt_generator(generator, spec)
        self.post = ToUint8NHWC(spec.output_range) if output_format == "uint8-nhwc" else None
        self.conditional = spec.num_classes > 0
        self.truncated = spec.has_truncation

    def forward(self, *inputs: torch.Tensor):
        z, rest = inputs[0], list(inputs[1:])
        labels = rest.pop(0) if self.conditional else None
        truncation = rest.pop(0) if self.truncated else None
        raw = self.generator(z, labels, truncation)
        if self.post is None:  # float-nchw: the raw output is the shipped output
            return raw
        return self.post(raw), raw

    @property
    def output_names(self) -> list[str]:
        return ["images", RAW_OUTPUT] if self.post is not None else ["images"]


def prepare_generator(generator: nn.Module) -> nn.Module:
    """A CPU fp32 eval-mode copy with parametrizations (spectral norm) folded into plain weights.

    The caller's module is never changed. Folding matters: the TorchScript exporter fails on spectral
    norm (aten::vdot) and dynamo only folds small weights (docs/export-notes.md).
    """
    if not isinstance(generator, nn.Module):
        raise ExportError(f"a generator must be a torch.nn.Module, got {type(generator).__name__}")
    try:
        g = copy.deepcopy(generator)
    except Exception as e:
        raise ExportError(f"cannot copy the generator for export ({type(e).__name__}: {e}); "
                          "make the module deep-copyable (no open files or locks as attributes)") from None
    g = g.cpu().float().eval()
    from torch.nn.utils import parametrize

    for m in g.modules():
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    # old-style torch.nn.utils.spectral_norm hooks: fold weight_orig -> weight
    for m in g.modules():
        for hook in list(getattr(m, "_forward_pre_hooks", {}).values()):
            if type(hook).__name__ == "SpectralNorm":
                torch.nn.utils.remove_spectral_norm(m, name=hook.name)
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def check_against_spec(module: GraphModule, spec: GeneratorSpec, seeds: list[int]) -> dict[str, np.ndarray]:
    """Run the torch module on ``seeds``; SpecError when it does not do what the spec says, ExportError on NaN.

    Returns the reference outputs ``{"images", "raw"}`` as numpy arrays.
    """
    feeds = sample_inputs(spec, seeds)
    expected = (len(seeds), *spec.image_shape)
    try:
        with torch.no_grad():
            out = module(*(torch.from_numpy(v) for v in feeds.values()))
        images, raw = out if isinstance(out, tuple) else (out, out)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"the generator fails on inputs the spec describes (z {list(feeds['z'].shape)}"
                        + (f", labels in [0, {spec.num_classes})" if spec.num_classes else "")
                        + f"): {first}. " + (user_call_hint(module, spec) or
                        f"Expected a module taking those and returning images {list(expected)}; "
                        "fix latent_dim / num_classes in the spec")) from None
    if not isinstance(raw, torch.Tensor) or tuple(raw.shape) != expected:
        got = list(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise SpecError(f"the generator returns {got} but the spec says images {list(expected)} "
                        f"(B, channels, height, width) for z {list(feeds['z'].shape)}; "
                        + (user_call_hint(module, spec) or "fix channels/height/width in the spec or the module"))
    bad = int((~torch.isfinite(raw)).sum())
    if bad:
        raise ExportError(f"the generator returns {bad} NaN/Inf values for seeds {seeds[:4]}...; a generator must "
                          "return finite images in [-1, 1]: check its weights (a diverged training run?)")
    return {"images": images.numpy(), "raw": raw.numpy()}


CLI_FLAGS = {"z_layout": "--z-layout", "labels_as": "--labels-as", "output_layout": "--output-layout"}


def user_call_hint(module: GraphModule, spec: GeneratorSpec) -> str:
    """For a user's module that fails called as its spec says: the spec fields under which it runs and returns
    the spec's images, as advice ("" when none does, or for a family). Only ever tried on a failure."""
    import itertools

    from ganrt.models.external import UserModule

    if not spec.external or not isinstance(module.generator, UserModule):
        return ""
    raw = module.generator.module
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(spec, [0, 1]).items()}
    truncations = [spec.fixed_truncation] + ([1.0] if spec.fixed_truncation is None else [])  # a Python number
    forms = [CALL_FORMS[k] if k != "labels_as" or spec.conditional else ("index",) for k in CALL_FORMS]
    for values, fixed in itertools.product(itertools.product(*forms), truncations):
        changes = {k: v for k, v in zip(CALL_FORMS, values, strict=True) if getattr(spec, k) != v}
        if fixed != spec.fixed_truncation:
            changes.update({"has_truncation": False} if spec.has_truncation else {}, fixed_truncation=fixed)
        if not changes:
            continue
        candidate = spec.replace(**changes)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = UserModule(raw, candidate)(feeds["z"], feeds.get("labels"), feeds.get("truncation"))
        except Exception:
            continue
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, *spec.image_shape):
            fields = ", ".join(f"{k}={'<the truncation to draw at, e.g. 0.7>' if k == 'fixed_truncation' else repr(v)}"
                               for k, v in changes.items())
            flags = " ".join(f"{CLI_FLAGS[k]} {v}" for k, v in changes.items() if k in CLI_FLAGS)
            flags += " --no-truncation" if "has_truncation" in changes else ""
            flags += " --fixed-truncation 0.7" if "fixed_truncation" in changes else ""
            return (f"The module runs as the spec describes it with GeneratorSpec({fields}) (CLI: {flags.strip()}): "
                    "set that, see ganrt.spec")
    return ""


def _first_line(e: BaseException) -> str:
    cause = e
    while cause is not None and not isinstance(cause, torch.jit.TracerWarning):
        cause = cause.__cause__ or cause.__context__
    e = cause or e  # a TracerWarning turned error surfaces as an odd SystemError: show the warning itself
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def _export_dynamo(module: GraphModule, args: tuple, names: list[str], path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(module, args, dynamic_shapes=(tuple({0: batch} for _ in args),), strict=False)
    program = torch.onnx.export(ep, args, input_names=names, output_names=module.output_names,
                                opset_version=opset, dynamo=True, verbose=False, optimize=True)
    program.save(str(path))


def _export_torchscript(module: GraphModule, args: tuple, names: list[str], path: Path, opset: int) -> None:
    outputs = module.output_names
    with warnings.catch_warnings():
        # a TracerWarning means the trace baked in a data-dependent branch or a Python value: wrong graph
        warnings.simplefilter("error", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(module, args, str(path), input_names=names, output_names=outputs, opset_version=opset,
                          dynamo=False, dynamic_axes={n: {0: "batch"} for n in names + outputs},
                          do_constant_folding=True)


def export_onnx(module: GraphModule, spec: GeneratorSpec, path: str | Path, *, opset: int = 18,
                exporter: str = "auto", log=print) -> dict[str, Any]:
    """Export ``module`` to ``path`` (two outputs: images, raw) with a dynamic batch axis.

    ``exporter="auto"`` tries torch.export + the dynamo ONNX exporter (smaller graphs, BatchNorm folded)
    and falls back to the TorchScript exporter, saying why. Returns how it was made (for made_by).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    args = tuple(torch.from_numpy(v) for v in sample_inputs(spec, [0, 1]).values())  # batch 2: not specialised
    names = spec.input_names
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    for name in order:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
                (_export_dynamo if name == "dynamo" else _export_torchscript)(module, args, names, path, opset)
        except Exception as e:  # both exporters raise many unrelated types; the message is what matters
            failures.append(f"{name}: {_first_line(e)}")
            if name != order[-1]:
                log(f"  {name} exporter failed ({_first_line(e)}); falling back to the TorchScript exporter")
            continue
        return {"exporter": name, "opset": int(opset), "torch": torch.__version__,
                "fallback_reasons": failures}
    raise ExportError("the generator cannot be exported to ONNX: " + " | ".join(failures)
                      + ". Common causes: Python control flow on tensor values (if x.sum() > 0), ops without an "
                      "ONNX equivalent, or randomness inside forward; make forward a pure tensor computation")


def name_batch_axis(model) -> None:
    """Call the exporter's symbol for the batch axis (e.g. "s21") "batch", as the manifest does."""
    symbols = {i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input
               if i.type.tensor_type.shape.dim and i.type.tensor_type.shape.dim[0].dim_param}
    symbols.discard("")
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in symbols:
                d.dim_param = "batch"


def node_count(model) -> int:
    return len(model.graph.node)


def simplify(model) -> tuple[Any, dict[str, Any]]:
    """onnxslim (constant folding, dead-node removal, fusions); returns the model and before/after counts."""
    import onnxslim

    before = node_count(model)
    try:
        slim = onnxslim.slim(model)
    except Exception as e:  # keep the unsimplified graph, and say so in made_by
        return model, {"onnxslim": onnxslim.__version__, "nodes_before": before, "nodes_after": before,
                       "error": _first_line(e)}
    return slim, {"onnxslim": onnxslim.__version__, "nodes_before": before, "nodes_after": node_count(slim)}


def check_model(model, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"{what} fails onnx.checker ({_first_line(e)}); this is a bug in the exporter or "
                          "converter, please report it with the model") from None


def drop_output(model, name: str = RAW_OUTPUT):
    """The same graph without output ``name`` (and without nodes that only fed it)."""
    import onnx

    keep = [o for o in model.graph.output if o.name != name]
    if len(keep) == len(model.graph.output):
        return model
    model = copy.deepcopy(model)
    del model.graph.output[:]
    model.graph.output.extend(keep)
    needed = {o.name for o in keep}
    live = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer names too
                if attr.type == onnx.AttributeProto.GRAPH:
                    needed.update(i for n in attr.g.node for i in n.input)
    live_names = {id(n) for n in live}
    nodes = [n for n in model.graph.node if id(n) in live_names]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    inits = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    vi = [v for v in model.graph.value_info if v.name in needed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(vi)
    return model


def onnx_versions() -> dict[str, str]:
    import onnx

    return {"torch": torch.__version__, "onnx": onnx.__version__}
