"""TensorRT engines from the fp16 / int8 (or fp32) ONNX graphs, TensorRT 10/11 Python API.

The network is created STRONGLY TYPED: the precision of every layer comes from the ONNX graph (an fp16
graph gives fp16 layers, a QDQ graph int8 ones). TensorRT 11 has no FP16/INT8 builder flags, and none
are set here. One optimization profile covers batch [1, opt, max]; the workspace pool is limited; the
timing cache is loaded from and saved into the bundle (``timing.cache``). Engines are named by
precision, GPU compute capability and TensorRT version (``engines/fp16.sm90.trt10.13.0.plan``), since a
plan only runs on the GPU architecture and TensorRT version that built it.

After the build, the engine inspector (detailed profiling verbosity) reports every layer's precision;
an engine whose compute layers do not run in the requested precision (a silently-fp32 "fp16" engine)
is an error. The parts that need no GPU (profile shapes, names, version checks, inspector-JSON parsing)
are plain functions tested on CPU.
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
# LayerType/ParameterType of the layers that do the arithmetic whose precision matters
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatrixMultiply", "Gemm", "CaskConvolution",
                  "CaskDeconvolution", "CaskGemmConvolution", "CaskLinear", "gemm", "Myelin")
_PRECISION_TOKENS = (("FP8", "fp8"), ("INT8", "int8"), ("INT4", "int4"), ("BF16", "bf16"), ("FP16", "fp16"),
                     ("HALF", "fp16"), ("FP32", "fp32"), ("FLOAT", "fp32"), ("INT32", "int32"), ("INT64", "int64"))


# -- pure logic (tested on CPU) ----------------------------------------------------------------------
def parse_version(text: str) -> tuple[int, int, int]:
    """'10.13.0.35' -> (10, 13, 0); ExportError for anything else."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not m:
        raise ExportError(f"cannot read the TensorRT version {text!r}; expected 'major.minor.patch'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check_version(text: str) -> tuple[int, int, int]:
    version = parse_version(text)
    if version[0] not in SUPPORTED_MAJOR:
        raise BackendUnavailable(f"TensorRT {text} is not supported (ganrt builds with TensorRT "
                                 f"{' or '.join(map(str, SUPPORTED_MAJOR))}); {INSTALL_HINT}")
    return version


def version_tag(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def sm_tag(capability: tuple[int, int]) -> str:
    """(9, 0) -> '90'; (12, 0) -> '120'."""
    major, minor = capability
    if major < 1 or minor < 0:
        raise ExportError(f"invalid GPU compute capability {capability}")
    return f"{major}{minor}"


def engine_file(precision: str, capability: tuple[int, int], version: tuple[int, int, int]) -> str:
    """engines/<precision>.sm<XY>.trt<ver>.plan"""
    return f"engines/{precision}.sm{sm_tag(capability)}.trt{version_tag(version)}.plan"


def engine_artifact(precision: str, capability: tuple[int, int], version: tuple[int, int, int]) -> str:
    """trt-<precision>-sm<XY>-trt<ver>"""
    return f"trt-{precision}-sm{sm_tag(capability)}-trt{version_tag(version)}"


def engine_compatible(entry: dict[str, Any], capability: tuple[int, int], version_text: str) -> bool:
    """Whether an engine artifact (manifest entry) runs on this GPU with this TensorRT."""
    return (str(entry.get("sm")) == sm_tag(capability)
            and entry.get("tensorrt") == version_tag(parse_version(version_text)))


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
        if not dims or dims[0] != "batch" or any(not isinstance(d, int) for d in dims[1:]):
            raise ExportError(f"input {i['name']!r} has shape {dims}: expected ['batch', fixed dims...]")
        shapes[i["name"]] = tuple(tuple([b, *dims[1:]]) for b in (1, opt, max_batch))
    return shapes


def layer_precision(layer: dict[str, Any]) -> str | None:
    """A layer's arithmetic precision from its inspector JSON (weights type, else its first input's format)."""
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Type"):
        return _precision_of(str(weights["Type"]))
    for key in ("Inputs", "Outputs"):
        for t in layer.get(key) or []:
            p = _precision_of(str(t.get("Format/Datatype", "")))
            if p:
                return p
    return None


def _precision_of(text: str) -> str | None:
    up = text.upper()
    for token, name in _PRECISION_TOKENS:
        if re.search(rf"(?<![A-Z]){token}(?![A-Z0-9])", up):
            return name
    return None


def _is_compute(layer: dict[str, Any]) -> bool:
    kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"
    return any(k.lower() in kind.lower() for k in COMPUTE_LAYERS) or isinstance(layer.get("Weights"), dict)


@dataclass
class PrecisionReport:
    compute: dict[str, int]  # precision -> number of compute layers
    all_layers: dict[str, int]
    unknown: int  # layers whose precision the inspector did not say (e.g. not built with detailed verbosity)

    def to_dict(self) -> dict[str, Any]:
        return {"compute_layers": self.compute, "all_layers": self.all_layers, "unknown": self.unknown}


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
    return PrecisionReport(dict(compute), dict(every), unknown)


def check_precision(report: PrecisionReport, precision: str, engine_name: str = "engine") -> None:
    """ExportError unless compute layers really run in ``precision`` (fp32 engines: none needed)."""
    if precision == "fp32":
        return
    total = sum(report.compute.values())
    if total == 0:
        raise ExportError(f"{engine_name}: the engine inspector shows no compute layer with a known precision "
                          f"(unknown: {report.unknown}); cannot confirm it runs in {precision}")
    if report.compute.get(precision, 0) == 0:
        raise ExportError(f"{engine_name}: no compute layer runs in {precision} (layers by precision: "
                          f"{report.compute}): the engine is silently {max(report.compute, key=report.compute.get)}. "
                          f"Check that the {precision} ONNX graph really carries {precision} types")


# -- the build (needs a GPU and TensorRT) ---------------------------------------------------------------
def require_tensorrt():
    """The tensorrt module, and the GPU's compute capability; BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"TensorRT engines need the tensorrt package, which is not installed; "
                                 f"{INSTALL_HINT}") from None
    check_version(trt.__version__)
    return trt, gpu_capability()


def gpu_capability() -> tuple[int, int]:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"TensorRT engines need a CUDA GPU and this machine has none visible to torch "
                                 f"(torch {torch.__version__}); {INSTALL_HINT}")
    return tuple(torch.cuda.get_device_capability(0))


def _graph_inputs(onnx_path: Path) -> list[dict[str, Any]]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    out = []
    for i in model.graph.input:
        dims = ["batch" if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim]
        out.append({"name": i.name, "shape": dims})
    return out


def build_engine(onnx_path: str | Path, stage: str | Path, *, precision: str, max_batch: int,
                 opt_batch: int | None = None, workspace_mb: int = 1024,
                 timing_cache: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Build, save and inspect one engine. Returns (plan path in ``stage``, bundle entry incl. "name")."""
    trt, capability = require_tensorrt()
    version = parse_version(trt.__version__)
    onnx_path, stage = Path(onnx_path), Path(stage)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    shapes = profile_shapes(_graph_inputs(onnx_path), max_batch, opt_batch)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU/version is just not used
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

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(bytes(plan))
    inspector = engine.create_engine_inspector()
    report = parse_inspector(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    name = engine_artifact(precision, capability, version)
    check_precision(report, precision, name)
    import torch

    entry = {"name": name, "file": file, "kind": "engine", "precision": precision,
             "made_by": {"tensorrt": trt.__version__, "from": onnx_path.name, "strongly_typed": True,
                         "workspace_mb": int(workspace_mb), "gpu": torch.cuda.get_device_name(0)},
             "sm": sm_tag(capability), "tensorrt": version_tag(version),
             "profile": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])} for k, v in shapes.items()},
             "layer_precisions": report.to_dict(), "parity": None, "passed": None}
    return plan_path, entry


def run_plan(plan: bytes, feeds: dict[str, Any]) -> dict[str, Any]:
    """Run a serialized engine once on ``feeds`` (numpy arrays) with device buffers; numpy outputs."""
    import numpy as np
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    keep = []
    for name, value in feeds.items():
        t = torch.from_numpy(np.ascontiguousarray(value)).cuda()
        keep.append(t)
        context.set_input_shape(name, tuple(t.shape))
        context.set_tensor_address(name, t.data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
        out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, out.data_ptr())
        outputs[name] = out
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError("TensorRT failed to run the engine it just built")
    stream.synchronize()
    return {k: v.cpu().numpy() for k, v in outputs.items()}


def verify_engine(plan_path: str | Path, reference, spec, *, variant: str, tolerance) -> dict[str, Any]:
    """Parity of an engine against the torch reference (same seeds and batches as the ONNX graphs)."""
    import numpy as np

    from ganrt.export.verify import _as_uint8
    from ganrt.parity import image_parity, json_safe

    plan = Path(plan_path).read_bytes()
    refs, outs, nonfinite = [], [], 0
    for feeds, ref in zip(reference.feeds, reference.images, strict=True):
        images = run_plan(plan, feeds)["images"]
        if images.dtype != np.uint8:
            nonfinite += int((~np.isfinite(images)).sum())
            images = _as_uint8(images, spec.output_range)
        refs.append(ref)
        outs.append(images)
    parity = image_parity(np.concatenate(refs), np.concatenate(outs), nonfinite=nonfinite)
    failures = tolerance.failures(parity)
    parity.update({"batch_sizes": list(reference.batches), "reference": "torch-fp32", "runner": "tensorrt"})
    return {"parity": json_safe(parity), "passed": not failures, "failures": failures}
