"""TensorRT engines from the fp16 / int8 (or fp32) ONNX graphs, TensorRT 10/11 Python API.

The network is STRONGLY TYPED: the precision of every layer comes from the ONNX graph (an fp16 graph gives
fp16 layers, a QDQ graph int8 ones). TensorRT 11 has no FP16/INT8 builder flags and always builds strongly
typed networks (its ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is deprecated, "always enabled"), so
the flag is passed to TensorRT 10 only. One optimization profile covers batch [1, opt, max]; the workspace
pool is limited; no auxiliary streams (the runtime runs many contexts, one stream per slot); TF32 is
cleared for fp32 engines (TensorRT enables it by default; an "fp32" engine must compute in fp32 to meet
fp32's 1-level tolerance). The timing cache is loaded from and saved into the bundle (``timing.cache``)
with strict verification: a cache made on another GPU or TensorRT is replaced by a fresh one, never
imported (TensorRT warns that a foreign cache "may lead to functional/performance bugs").

An engine is named by precision, GPU compute capability and the full TensorRT version
(``engines/fp16.sm90.trt10.13.0.35.plan``): the standard runtime deserializes a plan only with the very
TensorRT build that made it. Without a hardware-compatibility level TensorRT guarantees a plan only on the
GPU model that built it, so its entry records that GPU (the runtime says when it runs elsewhere);
``hardware_compatibility="same-cc"`` builds with ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY``,
valid on every GPU of that compute capability.

After the build, the engine inspector (detailed profiling verbosity) reports every layer's precision, in
TensorRT 10's layout (``Weights.Type``, tensor ``"Format/Datatype"``) or TensorRT 11's (``Constants`` and
tensor ``"Datatype"``/``"Format"``, split): an engine whose compute layers do not run in the requested
precision (a silently-fp32 "fp16" engine) is an error; an inspector output that names no layer precision at
all is a warning, recorded in the entry (parity still gates the engine). The parts that need no GPU
(profile shapes, names, versions, inspector JSON, the timing-cache policy) are plain functions tested on
CPU, with fake ``tensorrt`` objects where they call TensorRT.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganrt.errors import BackendUnavailable, ExportError

SUPPORTED_MAJOR = (10, 11)
INSTALL_HINT = "install the GPU extras on a machine with an NVIDIA GPU: pip install 'ganrt[gpu]'"
# --trt-hardware-compat -> trt.HardwareCompatibilityLevel member (None: the default, this GPU model only)
HARDWARE_COMPATIBILITY = {"none": None, "same-cc": "SAME_COMPUTE_CAPABILITY"}
# LayerType/ParameterType of the layers that do the arithmetic whose precision matters
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatrixMultiply", "Gemm", "CaskConvolution",
                  "CaskDeconvolution", "CaskGemmConvolution", "CaskLinear", "gemm", "Myelin")
# kernel names of convolutions and matrix products (TensorRT 11 fuses them into Myelin/kgen layers)
COMPUTE_TACTICS = ("gemm", "conv", "fprop", "dgrad", "hmma", "imma", "xmma")
# how the inspector spells a data type (TensorRT 10 "Row major linear FP16 format", "Half"; TensorRT 11
# "Half", "BFloat16"), longest first where one contains another
_PRECISION_TOKENS = (("FP8", "fp8"), ("FP4", "fp4"), ("INT8", "int8"), ("INT4", "int4"), ("BFLOAT16", "bf16"),
                     ("BF16", "bf16"), ("FLOAT16", "fp16"), ("FP16", "fp16"), ("HALF", "fp16"), ("FP32", "fp32"),
                     ("FLOAT", "fp32"), ("INT32", "int32"), ("INT64", "int64"))
# arithmetic precisions, narrowest first: a layer runs in the narrowest one among its tensors
ARITHMETIC = ("fp4", "int4", "fp8", "int8", "fp16", "bf16", "fp32")


# -- pure logic (tested on CPU) ----------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); '11.0' -> (11, 0); ExportError for anything else."""
    m = re.match(r"^\s*(\d+(?:\.\d+)+)", str(text))
    if not m:
        raise ExportError(f"cannot read the TensorRT version {text!r}; expected 'major.minor.patch.build'")
    return tuple(int(p) for p in m.group(1).split("."))


def check_version(text: str) -> tuple[int, ...]:
    version = parse_version(text)
    if version[0] not in SUPPORTED_MAJOR:
        raise BackendUnavailable(f"TensorRT {text} is not supported (ganrt builds with TensorRT "
                                 f"{' or '.join(map(str, SUPPORTED_MAJOR))}); {INSTALL_HINT}")
    return version


def version_tag(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def sm_tag(capability: tuple[int, int]) -> str:
    """(9, 0) -> '90'; (12, 0) -> '120'."""
    major, minor = capability
    if major < 1 or minor < 0:
        raise ExportError(f"invalid GPU compute capability {capability}")
    return f"{major}{minor}"


def engine_file(precision: str, capability: tuple[int, int], version: tuple[int, ...]) -> str:
    """engines/<precision>.sm<XY>.trt<full version>.plan"""
    return f"engines/{precision}.sm{sm_tag(capability)}.trt{version_tag(version)}.plan"


def engine_artifact(precision: str, capability: tuple[int, int], version: tuple[int, ...]) -> str:
    """trt-<precision>-sm<XY>-trt<full version>"""
    return f"trt-{precision}-sm{sm_tag(capability)}-trt{version_tag(version)}"


def network_flags(trt, version: tuple[int, ...]) -> int:
    """``create_network`` flags: STRONGLY_TYPED on TensorRT 10; none on 11, where every network is strongly
    typed and the flag is deprecated (its value moved from 1 to 0 between the two)."""
    if version[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def attach_timing_cache(config, blob: bytes) -> str:
    """Attach ``blob`` (the bundle's timing cache) to a builder config when TensorRT verifies it was made on
    this GPU and TensorRT (``ignore_mismatch=False``), else a fresh cache. Returns what was attached."""
    cache = config.create_timing_cache(blob) if blob else None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return "reused"
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise ExportError("TensorRT could not attach a fresh timing cache to the builder (see the TensorRT log)")
    return "fresh: the bundle's cache was made on another GPU or TensorRT" if blob else "fresh"


def default_opt_batch(max_batch: int) -> int:
    """The batch the kernels are tuned for: a typical serving batch, at most the max."""
    return max(1, min(int(max_batch), 8))


def profile_shapes(inputs: list[dict[str, Any]], max_batch: int, opt_batch: int | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per graph input (manifest "graph" inputs: batch axis is the string "batch")."""
    if max_batch < 1:
        raise ExportError(f"max batch must be >= 1, got {max_batch}")
    opt = default_opt_batch(max_batch) if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= max_batch:
        raise ExportError(f"opt batch must be in [1, {max_batch}], got {opt}")
    shapes = {}
    for i in inputs:
        dims = list(i["shape"])
        if (not dims or dims[0] != "batch" or any(not isinstance(d, int) or isinstance(d, bool) or d < 1
                                                  for d in dims[1:])):
            raise ExportError(f"input {i['name']!r} has shape {dims}: expected ['batch', fixed dims...]")
        shapes[i["name"]] = tuple(tuple([b, *dims[1:]]) for b in (1, opt, max_batch))
    return shapes


def _precision_of(text: str) -> str | None:
    up = str(text).upper()
    for token, name in _PRECISION_TOKENS:
        if re.search(rf"(?<![A-Z]){token}(?![A-Z0-9])", up):
            return name
    return None


def _narrowest(texts) -> str | None:
    """The narrowest arithmetic precision named in ``texts`` (int32/int64/uint8/bool name none)."""
    found = {_precision_of(t) for t in texts}
    return next((p for p in ARITHMETIC if p in found), None)


def _datatype(tensor: dict[str, Any]) -> str:
    """A tensor's data type: TensorRT 11's "Datatype" (the migration guide spells it "DataType"), else
    TensorRT 10's combined "Format/Datatype" ("Channel major FP16 format where channel % 8 == 0")."""
    for key in ("Datatype", "DataType", "Format/Datatype"):
        if tensor.get(key):
            return str(tensor[key])
    return ""


def layer_precision(layer: dict[str, Any]) -> str | None:
    """A layer's arithmetic precision from its inspector JSON, TensorRT 10 or 11 layout: the type of its
    weights (10: ``Weights.Type``; 11: its ``Constants``), else the narrowest type among its input and
    output tensors (a fused region whose boundary input is fp32 still shows its fp16 tensors)."""
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Type"):
        return _narrowest([weights["Type"]])
    constants = [c for c in layer.get("Constants") or [] if isinstance(c, dict)]
    p = _narrowest(_datatype(c) for c in constants)
    if p:
        return p
    tensors = [t for key in ("Inputs", "Outputs") for t in layer.get(key) or [] if isinstance(t, dict)]
    return _narrowest(_datatype(t) for t in tensors)


def _is_compute(layer: dict[str, Any]) -> bool:
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}".lower()
    tactic = str(layer.get("TacticName") or "").lower()
    return (any(k.lower() in kind for k in COMPUTE_LAYERS) or isinstance(layer.get("Weights"), dict)
            or bool(layer.get("Constants")) or any(t in tactic for t in COMPUTE_TACTICS))


@dataclass
class PrecisionReport:
    compute: dict[str, int]  # precision -> number of compute layers
    all_layers: dict[str, int]
    unknown: int  # layers whose precision the inspector did not say (e.g. not built with detailed verbosity)
    layout: str = "unknown"  # "tensorrt-10" ("Format/Datatype", Weights) or "tensorrt-11" (Datatype, Constants)

    def to_dict(self) -> dict[str, Any]:
        return {"compute_layers": self.compute, "all_layers": self.all_layers, "unknown": self.unknown,
                "layout": self.layout}


def _layout(layers: list) -> str:
    keys = {k for layer in layers if isinstance(layer, dict) for k in layer}
    tensor_keys = {k for layer in layers if isinstance(layer, dict) for side in ("Inputs", "Outputs", "Constants")
                   for t in layer.get(side) or [] if isinstance(t, dict) for k in t}
    if "Format/Datatype" in tensor_keys or "Weights" in keys:
        return "tensorrt-10"
    if tensor_keys & {"Datatype", "DataType"} or "Constants" in keys:
        return "tensorrt-11"
    return "unknown"


def parse_inspector(info: str | dict[str, Any]) -> PrecisionReport:
    """Count layer precisions in IEngineInspector.get_engine_information(LayerInformationFormat.JSON)."""
    data = json.loads(info) if isinstance(info, str) else info
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ExportError("the engine inspector's JSON has no 'Layers' list; build with "
                          "ProfilingVerbosity.DETAILED to see layer precisions")
    compute, every, unknown = Counter(), Counter(), 0
    for layer in layers:
        if not isinstance(layer, dict):  # layer names only: the engine was not built with detailed verbosity
            unknown += 1
            continue
        p = layer_precision(layer)
        if p is None:
            unknown += 1
            continue
        every[p] += 1
        if _is_compute(layer):
            compute[p] += 1
    return PrecisionReport(dict(compute), dict(every), unknown, _layout(layers))


def check_precision(report: PrecisionReport, precision: str, engine_name: str = "engine") -> str | None:
    """ExportError when the compute layers the inspector names run in another precision than ``precision`` (a
    silently-fp32 engine); a warning (returned) when it names no compute layer's precision at all, which is
    an inspector output this code cannot read, not proof of a wrong engine. None: confirmed (fp32: nothing
    to confirm)."""
    if precision == "fp32":
        return None
    total = sum(report.compute.values())
    if total == 0:
        return (f"{engine_name}: the engine inspector names no compute layer's precision (layout "
                f"{report.layout}, {report.unknown} layers unread): its {precision} arithmetic is not confirmed; "
                "parity still gates the engine")
    if report.compute.get(precision, 0) == 0:
        raise ExportError(f"{engine_name}: no compute layer runs in {precision} (layers by precision: "
                          f"{report.compute}): the engine is silently {max(report.compute, key=report.compute.get)}. "
                          f"Check that the {precision} ONNX graph really carries {precision} types")
    return None


# -- the build (needs a GPU and TensorRT) ---------------------------------------------------------------
def require_tensorrt():
    """(the tensorrt module, the current GPU's (compute capability, name)); BackendUnavailable saying what is
    missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"TensorRT engines need the tensorrt package, which is not installed; "
                                 f"{INSTALL_HINT}") from None
    check_version(trt.__version__)
    return trt, current_gpu()


def tensorrt_missing() -> str | None:
    """None when TensorRT and a CUDA GPU are here, else why not (BackendUnavailable's message)."""
    try:
        require_tensorrt()
    except BackendUnavailable as e:
        return str(e)
    return None


def lint_engine_sources(graphs: dict[str, Path], log) -> str:
    """Lint the ONNX graphs engines are built from for TensorRT (ganrt.export.tensorrt_lint), log every
    finding; returns the one-line verdict. TensorRT itself, where it is installed, has the last word."""
    from ganrt.export.tensorrt_lint import lint_files, render, verdict

    report = lint_files(graphs)
    line = verdict(report)
    log(f"  TensorRT lint of {', '.join(graphs) or 'no graph'}: {line}")
    for finding in render(report).splitlines()[1:-1]:
        if not finding.endswith(": clean"):
            log(f"  {finding.strip()}")
    return line


def tensorrt_wheels() -> list[str]:
    """The installed TensorRT distributions ("tensorrt-cu13 11.1.0.106"): which CUDA major a plan's TensorRT
    was built for is in the wheel's name, not in ``trt.__version__``."""
    import importlib.metadata as md

    return sorted(f"{d.metadata['Name']} {d.version}" for d in md.distributions()
                  if str(d.metadata["Name"] or "").lower().startswith("tensorrt"))


def current_gpu() -> tuple[tuple[int, int], str]:
    """(compute capability, name) of the current CUDA device: the one the engine is built on."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"TensorRT engines need a CUDA GPU and this machine has none visible to torch "
                                 f"(torch {torch.__version__}); {INSTALL_HINT}")
    device = torch.cuda.current_device()
    return tuple(torch.cuda.get_device_capability(device)), torch.cuda.get_device_name(device)


def _graph_inputs(onnx_path: Path) -> list[dict[str, Any]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    out = []
    for i in model.graph.input:
        dims = []
        for k, d in enumerate(i.type.tensor_type.shape.dim):
            if d.dim_param:
                dims.append("batch")
            elif d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:  # neither a name nor a size: no profile can cover it
                raise ExportError(f"{onnx_path.name}: input {i.name!r} dim {k} has no size; TensorRT's optimization "
                                  "profile needs fixed sizes beside the batch axis")
        out.append({"name": i.name, "shape": dims})
    return out


def build_engine(onnx_path: str | Path, stage: str | Path, *, precision: str, max_batch: int,
                 opt_batch: int | None = None, workspace_mb: int = 1024, timing_cache: str | Path | None = None,
                 hardware_compatibility: str = "none", log=None) -> tuple[Path, dict[str, Any]]:
    """Build, save and inspect one engine. Returns (plan path in ``stage``, bundle entry incl. "name")."""
    if hardware_compatibility not in HARDWARE_COMPATIBILITY:
        raise ExportError(f"hardware compatibility must be one of {', '.join(HARDWARE_COMPATIBILITY)}, got "
                          f"{hardware_compatibility!r}")
    trt, (capability, gpu) = require_tensorrt()
    version = check_version(trt.__version__)
    onnx_path, stage = Path(onnx_path), Path(stage)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, version))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads external weights beside the file, if any
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors} (`ganrt inspect BUNDLE --lint "
                          "tensorrt` names what TensorRT's operator table does not support)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.max_aux_streams = 0  # the runtime runs many contexts, each on its slot's one stream
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32's tolerance is 1 level
    level = HARDWARE_COMPATIBILITY[hardware_compatibility]
    if level is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    shapes = profile_shapes(_graph_inputs(onnx_path), max_batch, opt_batch)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise ExportError(f"TensorRT refused the optimization profile {shapes} for {onnx_path.name}")
    cache_path = Path(timing_cache) if timing_cache else None
    cache_note = attach_timing_cache(config, cache_path.read_bytes() if cache_path and cache_path.is_file()
                                     else b"")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see the TensorRT log above); "
                          f"try a larger workspace (--trt-workspace-mb) or another precision")
    if cache_path is not None:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    file = engine_file(precision, capability, version)
    plan_path = stage / file
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))

    engine = trt.Runtime(logger).deserialize_cuda_engine(bytes(plan))
    if engine is None:
        raise ExportError(f"TensorRT {trt.__version__} cannot deserialize the engine it just built from "
                          f"{onnx_path.name} (see the TensorRT log above)")
    report = parse_inspector(engine.create_engine_inspector().get_engine_information(
        trt.LayerInformationFormat.JSON))
    name = engine_artifact(precision, capability, version)
    warning = check_precision(report, precision, name)
    if warning and log is not None:
        log(f"  warning: {warning}")
    entry = {"name": name, "file": file, "kind": "engine", "precision": precision,
             "made_by": {"tensorrt": trt.__version__, "from": onnx_path.name, "strongly_typed": True,
                         "workspace_mb": int(workspace_mb), "tf32": precision != "fp32", "aux_streams": 0,
                         "timing_cache": cache_note, "gpu": gpu, "wheels": tensorrt_wheels()},
             "sm": sm_tag(capability), "tensorrt": version_tag(version),
             "hardware_compatibility": hardware_compatibility,
             "profile": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])} for k, v in shapes.items()},
             "layer_precisions": {**report.to_dict(), "confirmed": warning is None, "warning": warning},
             "parity": None, "passed": None}
    return plan_path, entry


class PlanRunner:
    """A serialized engine deserialized once, run on numpy feeds with device buffers (export's parity)."""

    def __init__(self, plan: bytes) -> None:
        import tensorrt as trt

        self._trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ExportError("TensorRT cannot deserialize the engine it just built (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ExportError("TensorRT could not create an execution context for the engine it just built")

    def _torch_dtype(self, name: str):
        import numpy as np
        import torch

        return torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch

        trt, engine, context = self._trt, self.engine, self.context
        keep = []
        for name, value in feeds.items():  # in the engine's own dtype: TensorRT reads the raw bytes
            t = torch.from_numpy(np.ascontiguousarray(value)).to(self._torch_dtype(name)).cuda()
            keep.append(t)
            if not context.set_input_shape(name, tuple(t.shape)):
                raise ExportError(f"TensorRT refused input {name!r} of shape {tuple(t.shape)} (outside the "
                                  "engine's optimization profile?)")
            context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ExportError(f"TensorRT cannot tell the shape of output {name!r} ({shape}) for these inputs")
            out = torch.empty(shape, dtype=self._torch_dtype(name), device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())  # the input copies above ran on the current stream
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine it just built")
        stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def verify_engine(plan_path: str | Path, reference, spec, *, variant: str, tolerance) -> dict[str, Any]:
    """Parity of an engine against the torch reference (same seeds and batches as the ONNX graphs)."""
    import numpy as np

    from ganrt.export.verify import _as_uint8
    from ganrt.parity import image_parity, json_safe

    run = PlanRunner(Path(plan_path).read_bytes())
    refs, outs, nonfinite = [], [], 0
    for feeds, ref in zip(reference.feeds, reference.images, strict=True):
        images = run(feeds)["images"]
        if images.dtype != np.uint8:
            nonfinite += int((~np.isfinite(images)).sum())
            images = _as_uint8(images, spec.output_range)
        refs.append(ref)
        outs.append(images)
    parity = image_parity(np.concatenate(refs), np.concatenate(outs), nonfinite=nonfinite)
    failures = tolerance.failures(parity)
    parity.update({"batch_sizes": list(reference.batches), "reference": "torch-fp32", "runner": "tensorrt"})
    return {"parity": json_safe(parity), "passed": not failures, "failures": failures}
