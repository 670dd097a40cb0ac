"""A Triton Inference Server model repository from a bundle: one model per variant Triton can run.

    ganrt export-triton bundle --out repo                       # then: tritonserver --model-repository=repo
    ganrt export-triton bundle --out repo --backend python      # then: ganrt triton repo
    write_repository(Bundle.open("bundle"), "repo", TritonOptions(device="cpu", instances=2))

With ``backend="native"`` (the default), Triton's own backends run the bundle's graphs:
- ONNX graphs (onnx-fp32/fp16/int8, and the rewritten fp32 graph on a CPU) as ``platform: "onnxruntime_onnx"``,
  on CPU or GPU instances; on a GPU optionally through onnxruntime's TensorRT execution accelerator.
- TensorRT plans as ``platform: "tensorrt_plan"``, one model per precision holding every GPU architecture's
  plan, chosen by ``cc_model_filenames`` (no default file: a GPU without its own plan refuses to load).
- The OpenVINO IR (openvino-int8) and the graphs OpenVINO runs in fp32/bf16 as ``backend: "openvino"`` (CPU).

Every model: ``max_batch_size`` the bundle's max batch, dims without the batch axis, ``labels``/``truncation``
(shape [B] in the graph) as ``dims: [1]`` with ``reshape: { shape: [] }`` (the [B, 1] that Triton's clients
and ``ganrt loadtest --protocol v2`` send), ``dynamic_batching`` with a queue delay, ``model_warmup`` at batch 1
and the max batch. Configs are built as Triton's own ``ModelConfig`` protobuf (``model_config_pb2`` from the
``tritonclient`` wheel), and the repository is checked before it is moved into place: every config.pbtxt
parses with that schema, names its model, and its inputs, outputs, dtypes and dims match the graph it serves
(read from the ONNX file or the OpenVINO IR; a plan's I/O from the bundle's manifest, since reading a plan
needs TensorRT and its GPU). Only variants whose parity passed are exported.

With ``backend="python"``, Triton's Python backend runs ganrt's own runtime (``ganrt.serve.triton_model``): one
model running ``auto`` (or one per variant named), its version directory holding ``model.py`` and a copy of the
bundle, taking ``seeds`` INT64 or ``z``, plus ``labels``/``truncation`` as the generator has them, batched by
Triton's dynamic batcher as the bundle's tuning record for this machine says (``tuned_batching``, as
``ganrt serve`` batches). ``ganrt triton`` serves such a repository with the Triton server of the
nvidia-pytriton wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.artifacts import candidates, runs_of
from ganrt.bundle import MANIFEST, TUNING_DIR, Bundle, confine
from ganrt.errors import BackendUnavailable, BundleError, ConfigError, ExportError, GanrtError
from ganrt.fileio import LockBusy, exclusive_lock
from ganrt.oip import config_io

MARKER = "ganrt-triton.json"  # at the repository root: what it was made from (and that it may be replaced)
INSTALL_HINT = "pip install 'ganrt[triton]'"
DEVICES = ("gpu", "cpu")
BACKENDS = ("native", "python")  # Triton's onnxruntime/TensorRT/OpenVINO backends, or ganrt's runtime in Python
DEFAULT_QUEUE_DELAY_US = 5000
PYTHON_MODEL = "model.py"  # a Python-backend model's code, in its version directory
BUNDLE_COPY = "bundle"  # beside it: the copy of the bundle it runs
# what a Python-backend model.py holds: the model is ganrt's, installed in the backend's Python
MODEL_PY = """# Written by `ganrt export-triton --backend python`. Triton's Python backend runs ganrt's runtime on the
# bundle copied beside this file (./bundle); the backend's Python needs ganrt installed: see the repository's README.
from ganrt.serve.triton_model import TritonPythonModel  # noqa: F401
"""
ORT_TENSORRT = ("none", "fp32", "fp16")
PER_IMAGE = ("labels", "truncation")  # [B] in the graph; [B, 1] on the wire
TRITON_BACKENDS = ("onnxruntime", "openvino")  # ganrt backend rows whose artifacts Triton runs as they are


@dataclass(frozen=True)
class TritonOptions:
    variants: tuple[str, ...] | None = None  # ganrt variant names (default: every one Triton can run)
    backend: str = "native"  # "native": Triton's backends on the graphs; "python": ganrt's runtime in Python
    device: str = "gpu"  # instances of the ONNX and Python models: "gpu" or "cpu" (OpenVINO: CPU; plans: GPU)
    instances: int = 1  # instances per model (per GPU for KIND_GPU)
    max_queue_delay_us: int | None = None  # dynamic batching: the longest a request waits for others (default:
    # the tuning record's for Python models, else DEFAULT_QUEUE_DELAY_US)
    max_batch: int | None = None  # default: the bundle's (never above it)
    ort_tensorrt: str = "none"  # ONNX models on a GPU through onnxruntime's TensorRT accelerator: fp32, fp16
    model_name: str | None = None  # prefix of every model name (default: the bundle directory's name)


@dataclass
class Model:
    """One Triton model: its name, how Triton runs it, and the bundle files of its version 1."""

    name: str
    variant: str
    artifacts: list[str]
    files: dict[str, str]  # file name in the version directory -> bundle artifact
    config: dict[str, Any] = field(default_factory=dict)


def model_config_pb2():
    """Triton's ModelConfig schema, as shipped in the tritonclient wheel."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as e:
        raise BackendUnavailable(f"export-triton builds and checks configs with Triton's own schema, which needs "
                                 f"tritonclient and protobuf >= 6.33 ({e}): {INSTALL_HINT}") from None
    return pb2


def triton_dtype(dtype) -> str:
    """A numpy dtype (or its name) as a Triton config data_type: 'float32' -> 'TYPE_FP32'."""
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(np.dtype(dtype))
    if name is None:
        raise ExportError(f"Triton has no data type for {dtype}")
    return f"TYPE_{name}"


def cc_of_sm(sm: str) -> str:
    """A ganrt sm tag as Triton's compute capability key: '89' -> '8.9', '120' -> '12.0'."""
    sm = str(sm)
    if not sm.isdigit() or len(sm) < 2:
        raise BundleError(f"engine sm tag {sm!r} is not a compute capability like '89'")
    return f"{int(sm[:-1])}.{sm[-1]}"


# -- which models ------------------------------------------------------------------------------------------
def plan_models(bundle: Bundle, device: str, prefix: str) -> tuple[list[Model], dict[str, str]]:
    """Every model Triton can run from ``bundle`` on ``device``; {variant: why not} for the others."""
    arts = bundle.artifacts
    models, skipped = [], {}

    def pick(variant: str, precision: str, found: tuple[str, ...]) -> str | None:
        """The artifact the runtime runs for ``variant`` (the table of artifacts' fact), when it passed parity at
        that precision (its own, or the variant's record of export) and export did not record the variant failed."""
        present = [a for a in found if a in arts]
        passed = [a for a in present if arts[a].get("passed") is True]
        record = bundle.variants.get(variant) or {}
        verdict = record.get("passed") if passed and record.get("artifact") == passed[0] else None
        if verdict is False:
            skipped[variant] = f"{variant} failed verification at export ({'; '.join(record.get('failures') or [])})"
            return None
        if passed and arts[passed[0]].get("precision") != precision and not verdict:
            skipped[variant] = f"{passed[0]} has no {precision} parity on record"
            return None
        if present and not passed:
            skipped[variant] = f"{present[0]} did not pass parity"
        return passed[0] if passed else None

    for backend in TRITON_BACKENDS:
        for precision, implied in runs_of(backend):
            variant = "-".join((backend, precision, *implied))
            if implied and device != "cpu":  # an artifact-implied form ("-rw": the rewrite) is a CPU optimization
                continue
            art = pick(variant, precision, candidates(backend, precision, implied))
            if art:
                models.append(_model(bundle, f"{prefix}-{variant}", variant, art))
    plans: dict[tuple[str, str], dict[str, str]] = {}  # (precision, tensorrt) -> {cc: artifact}
    for name, entry in sorted(arts.items()):
        if entry.get("kind") != "engine":
            continue
        variant = f"tensorrt-{entry['precision']}"
        if entry.get("passed") is not True:
            skipped[variant] = f"{name} did not pass parity"
        elif device != "gpu":
            skipped[variant] = "TensorRT plans run on GPU instances only (--device gpu)"
        else:
            plans.setdefault((entry["precision"], str(entry.get("tensorrt"))), {})[cc_of_sm(entry.get("sm"))] = name
    versions: dict[str, int] = {}
    for precision, _ in plans:
        versions[precision] = versions.get(precision, 0) + 1
    for (precision, trt), by_cc in sorted(plans.items()):
        variant = f"tensorrt-{precision}" + (f"-trt{trt}" if versions[precision] > 1 else "")
        files = {Path(arts[a]["file"]).name: a for a in by_cc.values()}
        model = Model(f"{prefix}-{variant}", variant, sorted(by_cc.values()), files)
        model.config["cc_model_filenames"] = {cc: Path(arts[a]["file"]).name for cc, a in sorted(by_cc.items())}
        models.append(model)
    return models, skipped


def _model(bundle: Bundle, name: str, variant: str, art: str) -> Model:
    """The model of an ONNX graph or an OpenVINO IR (and its weights file)."""
    arts = bundle.artifacts
    if arts[art]["kind"] == "openvino-ir":
        weights = arts[art].get("weights_artifact")
        if weights not in arts:
            raise BundleError(f"bundle {bundle.path}: {art} names no weights artifact ({weights!r})")
        files = {"model.xml": art, "model.bin": weights}
    else:
        files = {"model.onnx": art}
    return Model(name, variant, sorted(set(files.values())), files)


# -- ganrt's runtime in Triton's Python backend -----------------------------------------------------------
def plan_python_models(bundle: Bundle, options: TritonOptions, prefix: str) -> list[Model]:
    """One model named ``prefix`` running ``auto``; with ``variants``, one per variant (``prefix-variant``),
    each checked against what runs here when the instances are CPUs (a GPU's variants load on the GPU)."""
    if options.variants is None:
        return [Model(prefix, "auto", sorted(bundle.artifacts), {})]
    if options.device == "cpu":
        from ganrt.runtime.machine import Availability
        from ganrt.runtime.selection import here

        runnable = here(bundle.to_dict(), Availability.probe())["runnable"]
        unknown = sorted(set(options.variants) - set(runnable))
        if unknown:
            raise ConfigError(f"--variants {', '.join(unknown)}: not a variant of {bundle.path} that runs here; it "
                              f"has {', '.join(runnable) or 'none'}")
    return [Model(f"{prefix}-{v}", v, sorted(bundle.artifacts), {}) for v in options.variants]


def python_batching(bundle: Bundle, variant: str, device: str) -> tuple[int, float] | None:
    """(batch, delay ms) from the bundle's tuning record for this machine, of ``variant`` (``auto``: the one
    auto picks here), as ``ganrt serve`` batches; None when it was not measured here."""
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import select
    from ganrt.runtime.tuning import machine_key, measured_latencies, read_tuning, tuned_batching

    if variant == "auto":
        try:
            variant = select(bundle.to_dict(), Availability.probe(), device="cuda" if device == "gpu" else "cpu",
                             tuning=read_tuning(bundle.path, machine_key(None))).variant
        except GanrtError:  # nothing of that device runs here: the defaults
            return None
    return tuned_batching(measured_latencies(bundle, variant, None) or {})


def python_config(model: Model, bundle: Bundle, options: TritonOptions, max_batch: int) -> dict[str, Any]:
    """The config of a Python-backend model running ganrt's runtime on ``model.variant``."""
    from ganrt import __version__

    inputs, outputs = config_io(bundle.spec)
    tuned = python_batching(bundle, model.variant, options.device)
    batching: dict[str, Any] = {"max_queue_delay_microseconds": options.max_queue_delay_us if
                                options.max_queue_delay_us is not None else
                                round(tuned[1] * 1000) if tuned else DEFAULT_QUEUE_DELAY_US}
    if tuned and tuned[0] < max_batch:
        batching["preferred_batch_size"] = [tuned[0]]
    params = {"variant": model.variant, "device": options.device, "ganrt_version": __version__,
              "batching": "this machine's tuning record" if tuned else "defaults (no timings here: `ganrt bench`)"}
    return {"name": model.name, "backend": "python", "max_batch_size": max_batch, "input": inputs, "output": outputs,
            "instance_group": [{"kind": "KIND_GPU" if options.device == "gpu" else "KIND_CPU",
                                "count": options.instances}],
            "dynamic_batching": batching, "parameters": {k: {"string_value": v} for k, v in params.items()}}


def copy_bundle(bundle: Bundle, dest: Path) -> None:
    """The bundle's manifest, artifacts and tuning records under ``dest`` (the files a runtime reads)."""
    files = [MANIFEST, *sorted(bundle.files())]
    tuning = bundle.path / TUNING_DIR
    if tuning.is_dir():
        files += [f"{TUNING_DIR}/{p.name}" for p in sorted(tuning.glob("*.json")) if p.is_file()]
    for file in files:
        target = dest / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(confine(bundle.path, file, where=f"bundle {bundle.path}"), target)


# -- one config ------------------------------------------------------------------------------------------
def _tensor(t: dict[str, Any], per_image: bool) -> dict[str, Any]:
    dims = [int(d) for d in t["shape"][1:]]  # the graph's shape without its batch axis
    if per_image:
        return {"name": t["name"], "data_type": triton_dtype(t["dtype"]), "dims": [1], "reshape": {"shape": []}}
    return {"name": t["name"], "data_type": triton_dtype(t["dtype"]), "dims": dims}


def _warmup(inputs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    data = {"z": {"random_data": True}}  # labels 0 and truncation 0.0 are valid inputs of every generator
    return {"name": f"batch {batch}", "batch_size": batch,
            "inputs": {i["name"]: {"data_type": i["data_type"], "dims": i["dims"],
                                   **data.get(i["name"], {"zero_data": True})} for i in inputs}}


def build_config(model: Model, bundle: Bundle, options: TritonOptions, max_batch: int) -> dict[str, Any]:
    """The model's config as a dict in the field names of Triton's ModelConfig."""
    if options.backend == "python":
        return python_config(model, bundle, options, max_batch)
    graph = bundle.graph
    inputs = [_tensor(t, t["name"] in PER_IMAGE) for t in graph["inputs"]]
    outputs = [_tensor(t, False) for t in graph["outputs"]]
    config: dict[str, Any] = {"name": model.name, "max_batch_size": max_batch, "input": inputs, "output": outputs}
    kind = "KIND_CPU"
    if model.variant.startswith("onnxruntime-"):
        config["platform"] = "onnxruntime_onnx"
        kind = "KIND_GPU" if options.device == "gpu" else "KIND_CPU"
        if kind == "KIND_GPU" and options.ort_tensorrt != "none":
            config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
                "name": "tensorrt", "parameters": {"precision_mode": options.ort_tensorrt.upper(),
                                                   "max_workspace_size_bytes": str(1 << 30),
                                                   "trt_engine_cache_enable": "1"}}]}}
    elif model.variant.startswith("tensorrt-"):
        config["platform"] = "tensorrt_plan"
        config["cc_model_filenames"] = model.config["cc_model_filenames"]
        kind = "KIND_GPU"
    else:
        config["backend"] = "openvino"
        params = {"ENABLE_BATCH_PADDING": "YES"}  # the backend runs every batch at max_batch_size
        if "model.onnx" in model.files:
            config["default_model_filename"] = "model.onnx"
        if model.variant == "openvino-bf16":
            params["HINT_BF16"] = "YES"
        config["parameters"] = {k: {"string_value": v} for k, v in params.items()}
    config["instance_group"] = [{"kind": kind, "count": options.instances}]
    delay = options.max_queue_delay_us
    config["dynamic_batching"] = {"max_queue_delay_microseconds": DEFAULT_QUEUE_DELAY_US if delay is None else delay}
    config["model_warmup"] = [_warmup(inputs, b) for b in sorted({1, max_batch})]
    return config


def to_pbtxt(config: dict[str, Any]) -> str:
    """The config in protobuf text format, through Triton's schema (a wrong field or value fails here)."""
    from google.protobuf import json_format, text_format

    try:
        message = json_format.ParseDict(config, model_config_pb2().ModelConfig())
    except json_format.ParseError as e:
        raise ExportError(f"config of {config.get('name')!r} does not fit Triton's ModelConfig: {e}") from None
    return text_format.MessageToString(message)


# -- the check ---------------------------------------------------------------------------------------------
def _onnx_io(path: Path) -> dict[str, dict[str, tuple[str, list[int]]]]:
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def shape(v) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]

    def dtype(v) -> str:
        return triton_dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))

    return {"input": {v.name: (dtype(v), shape(v)) for v in graph.input if v.name not in inits},
            "output": {v.name: (dtype(v), shape(v)) for v in graph.output}}


def _openvino_io(path: Path) -> dict[str, dict[str, tuple[str, list[int]]]]:
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def describe(ports):
        return {p.get_any_name(): (triton_dtype(p.get_element_type().to_dtype()),
                                   [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()])
                for p in ports}

    return {"input": describe(model.inputs), "output": describe(model.outputs)}


def _manifest_io(graph: dict[str, Any]) -> dict[str, dict[str, tuple[str, list[int]]]]:
    def describe(tensors):
        return {t["name"]: (triton_dtype(t["dtype"]), [d if isinstance(d, int) else -1 for d in t["shape"]])
                for t in tensors}

    return {"input": describe(graph["inputs"]), "output": describe(graph["outputs"])}


def _compare(config, io: dict[str, dict[str, tuple[str, list[int]]]], source: str) -> list[str]:
    """Problems where the config's inputs/outputs differ from the graph's (names, dtypes, dims)."""
    pb2 = model_config_pb2()
    problems = []
    for kind in ("input", "output"):
        tensors = list(getattr(config, kind))
        names = {t.name for t in tensors}
        if names != set(io[kind]):
            problems.append(f"{config.name}: {kind}s {sorted(names)} but {source} has {sorted(io[kind])}")
            continue
        for t in tensors:
            dtype, shape = io[kind][t.name]
            declared = pb2.DataType.Name(t.data_type)
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            expected = ([-1] if config.max_batch_size > 0 else []) + dims
            if declared != dtype:
                problems.append(f"{config.name}: {kind} {t.name} is {declared} but {source} has {dtype}")
            if shape != expected:  # -1: the dynamic batch axis (Triton's own) in both
                problems.append(f"{config.name}: {kind} {t.name} has dims {expected} (batch first) but {source} "
                                f"has {shape}")
    return problems


def _check_python_model(config, version: Path) -> list[str]:
    """A Python-backend model: its model.py, its bundle copy intact (every sha256), its I/O that of ganrt's
    model of that bundle."""
    if not (version / PYTHON_MODEL).is_file():
        return [f"{config.name}: version 1 lacks {PYTHON_MODEL}"]
    try:
        copy = Bundle.open(version / BUNDLE_COPY)
    except BundleError as e:
        return [f"{config.name}: its copy of the bundle: {e}"]
    def describe(tensors):  # what ganrt's model of the bundle takes and returns, batch first
        return {t["name"]: (t["data_type"], [-1, *(t["reshape"]["shape"] if "reshape" in t else t["dims"])])
                for t in tensors}

    inputs, outputs = config_io(copy.spec)
    return _compare(config, {"input": describe(inputs), "output": describe(outputs)}, "ganrt's model of the bundle")


def check_repository(repo: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(problems, notes) of a model repository written by :func:`write_repository`: every config.pbtxt parses
    with Triton's schema, is named after its directory, its files are there, and its I/O matches its graph."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    repo = Path(repo)
    marker = json.loads((repo / MARKER).read_text()) if (repo / MARKER).is_file() else {}
    problems, notes = [], []
    dirs = sorted(p for p in repo.iterdir() if p.is_dir())
    if not dirs:
        problems.append(f"{repo} holds no model")
    for d in dirs:
        path = d / "config.pbtxt"
        if not path.is_file():
            problems.append(f"{d.name}: no config.pbtxt")
            continue
        try:
            config = text_format.Parse(path.read_text(), pb2.ModelConfig())
        except text_format.ParseError as e:
            problems.append(f"{d.name}/config.pbtxt does not parse with Triton's ModelConfig: {e}")
            continue
        if config.name != d.name:
            problems.append(f"{d.name}: config.pbtxt names the model {config.name!r}")
        version = d / "1"
        if config.backend == "python":
            problems += _check_python_model(config, version)
            continue
        if config.platform == "tensorrt_plan":
            files = list(config.cc_model_filenames.values())
        elif config.backend == "openvino" and not config.default_model_filename:
            files = ["model.xml", "model.bin"]
        else:
            files = [config.default_model_filename or "model.onnx"]
        missing = [f for f in files if not (version / f).is_file()]
        if missing or not files:
            problems.append(f"{d.name}: version 1 lacks {missing or 'any model file'}")
            continue
        if config.platform == "tensorrt_plan":
            if not marker.get("graph"):
                problems.append(f"{d.name}: no {MARKER} with the graph to check the plan's I/O against")
                continue
            problems += _compare(config, _manifest_io(marker["graph"]), "the bundle's graph")
            notes.append(f"{d.name}: I/O checked against the bundle's manifest (reading a plan needs TensorRT "
                         "and its GPU)")
        elif files[0].endswith(".xml") or config.backend == "openvino":
            try:
                io = _openvino_io(version / files[0])
            except ImportError:
                notes.append(f"{d.name}: OpenVINO is not installed: I/O not read from the graph")
                continue
            problems += _compare(config, io, files[0])
        else:
            problems += _compare(config, _onnx_io(version / files[0]), files[0])
    return problems, notes


# -- the repository --------------------------------------------------------------------------------------
def _psnr(entry: dict[str, Any]) -> str:
    value = (entry.get("parity") or {}).get("psnr_db")
    try:
        text = "identical" if float(value) == float("inf") else f"{float(value):.1f} dB"
    except (TypeError, ValueError):
        return "-"
    return text + (" (verified in f32: the exporting CPU had no bf16)" if entry.get("bf16_hardware") is False else "")


def _readme(bundle: Bundle, models: list[Model], skipped: dict[str, str], max_batch: int) -> str:
    """The repository's README: what each model is, how to serve it, call it and load it."""
    s, arts = bundle.spec, bundle.artifacts
    first = models[0].name
    rows = []
    for m in models:
        where = m.config.get("platform") or f"backend {m.config.get('backend')}"
        parity = ", ".join(f"{a}: {_psnr(arts[a])}" for a in m.artifacts if arts[a].get("kind") != "other")
        rows.append(f"| `{m.name}` | {m.variant} | {where} | {m.config['instance_group'][0]['kind']} | {parity} |")
    plans = [f"- `{m.name}`: " + ", ".join(f"sm {cc} -> `{f}` (TensorRT {arts[m.files[f]].get('tensorrt')})"
                                          for cc, f in m.config["cc_model_filenames"].items())
             for m in models if "cc_model_filenames" in m.config]
    wire = [f"`z` FP32 [B, {s.latent_dim}]"] + ([f"`labels` INT64 [B, 1] (0 to {s.num_classes - 1})"]
                                                if s.conditional else []) \
        + (["`truncation` FP32 [B, 1] (0 to 2, 1 = none)"] if s.has_truncation else [])
    out = bundle.graph["outputs"][0]
    labels = (f"labels = labels_from_seeds(seeds, {s.num_classes}).reshape(-1, 1)  # or your own classes\n"
              "inputs.append(triton.InferInput(\"labels\", list(labels.shape), \"INT64\"))\n"
              "inputs[-1].set_data_from_numpy(labels)\n") if s.conditional else ""
    trunc = ("truncation = np.full((len(seeds), 1), 0.7, np.float32)\n"
             "inputs.append(triton.InferInput(\"truncation\", list(truncation.shape), \"FP32\"))\n"
             "inputs[-1].set_data_from_numpy(truncation)\n") if s.has_truncation else ""
    lines = [
        f"# Triton model repository of `{bundle.path.resolve().name}`", "",
        f"Written by `ganrt export-triton` from the bundle at `{bundle.path.resolve()}` (manifest sha256 "
        f"`{bundle.sha256()[:16]}`): a {s.arch} generator, z {s.latent_dim}, "
        f"{f'{s.num_classes} classes' if s.conditional else 'unconditional'}, images {s.channels}x{s.height}x"
        f"{s.width}. Every model takes {', '.join(wire)} and returns `{out['name']}` "
        f"{out['dtype'].upper().replace('FLOAT32', 'FP32')} [B, {', '.join(map(str, out['shape'][1:]))}]; "
        f"max batch {max_batch}, batched by Triton's dynamic batcher.", "",
        "| model | ganrt variant | runs on | instances | parity against torch fp32 (PSNR) |", "|---|---|---|---|---|",
        *rows, "",
        "## Serve it", "",
        "```sh",
        "tritonserver --model-repository=$PWD    # every model; or load one:",
        f"tritonserver --model-repository=$PWD --model-control-mode=explicit --load-model={first}",
        "```", "",
        "In NVIDIA's container: `docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD:/models "
        "nvcr.io/nvidia/tritonserver:<release>-py3 tritonserver --model-repository=/models` (drop `--gpus all` "
        "for the CPU models). Readiness: `curl -s localhost:8000/v2/health/ready`.", "",
    ]
    if plans:
        lines += ["A TensorRT plan runs only on the GPU architecture and the TensorRT version that built it: use "
                  "the Triton release that ships that TensorRT. Each plan model picks its file by compute "
                  "capability (`cc_model_filenames`) and has no default, so a GPU without its own plan refuses to "
                  "load it rather than run a wrong one:", "", *plans, ""]
    lines += [
        "## Call it", "",
        "Latents come from seeds through `ganrt.latents` (the documented contract: "
        "`numpy.random.Generator(PCG64(seed)).standard_normal(latent_dim)` as float32), so a seed draws the same "
        "image here as in `ganrt generate` or `ganrt serve`, within the variant's parity:", "",
        "```python",
        "import numpy as np",
        "import tritonclient.http as triton",
        "from ganrt.latents import labels_from_seeds, latents_from_seeds", "",
        "seeds = [0, 1, 2, 3]",
        f"z = latents_from_seeds(seeds, {s.latent_dim})",
        "inputs = [triton.InferInput(\"z\", list(z.shape), \"FP32\")]",
        "inputs[0].set_data_from_numpy(z, binary_data=True)",
        (labels + trunc).rstrip("\n"),
        "client = triton.InferenceServerClient(\"localhost:8000\")",
        f"result = client.infer(\"{first}\", inputs, outputs=[triton.InferRequestedOutput(\"images\", "
        "binary_data=True)])",
        "images = result.as_numpy(\"images\")   # uint8 [4, H, W, C]",
        "```", "",
        "## Load it", "",
        "```sh",
        f"ganrt loadtest http://localhost:8000 --protocol v2 --model {first} --bundle {bundle.path.resolve()} "
        "--concurrency 1,8,64 --out lt/",
        "```", "",
        "`--bundle` tells the load tester the generator's inputs (Triton does not); `--check BUNDLE` also compares "
        "every answer with offline generation, exactly: use it only for a model that runs the same variant on the "
        "same kind of device as `ganrt generate` here.", "",
        "## Notes", "",
        "- `labels` and `truncation` are [B] in the graphs; the configs declare them `dims: [1]` with "
        "`reshape: { shape: [] }`, so clients send [B, 1] as Triton's clients do.",
        "- Triton's OpenVINO backend runs every batch at `max_batch_size` (`ENABLE_BATCH_PADDING`): a lone "
        "request costs a full batch there. Export with `--max-batch` near your typical batch for those models.",
        "- Each model warms up at batch 1 and at the max batch before it reports ready (`model_warmup`).",
    ]
    if skipped:
        lines += ["", "Not exported:", "", *[f"- {v}: {why}" for v, why in sorted(skipped.items())]]
    return "\n".join(lines) + "\n"


def _python_readme(bundle: Bundle, models: list[Model], max_batch: int) -> str:
    """The README of a Python-backend repository: what runs, how to serve it (``ganrt triton`` or your own
    Triton), call it (seeds in) and load it."""
    s = bundle.spec
    first = models[0].name
    rows = []
    for m in models:
        batching = m.config["dynamic_batching"]
        preferred = batching.get("preferred_batch_size")
        group, source = m.config["instance_group"][0], m.config["parameters"]["batching"]["string_value"]
        rows.append(f"| `{m.name}` | {m.variant} | {group['kind']} x {group['count']} | "
                    f"{preferred[0] if preferred else max_batch} | {batching['max_queue_delay_microseconds']} us "
                    f"({source}) |")
    inputs = ["`seeds` INT64 [B, 1] (latents from `ganrt.latents`, as `ganrt generate` draws them) or `z` FP32 "
              f"[B, {s.latent_dim}]"]
    if s.conditional:
        inputs.append(f"`labels` INT64 [B, 1] (0 to {s.num_classes - 1}; with seeds, default: the seeds' own labels)")
    if s.has_truncation:
        inputs.append("`truncation` FP32 [B, 1] (0 to 2, default 1 = none)")
    out = bundle.graph["outputs"][0]
    labels = (f"labels = np.full((len(seeds), 1), {s.num_classes - 1}, np.int64)  # optional with seeds\n"
              "inputs.append(triton.InferInput(\"labels\", list(labels.shape), \"INT64\"))\n"
              "inputs[-1].set_data_from_numpy(labels)\n") if s.conditional else ""
    lines = [
        f"# Triton model repository of `{bundle.path.resolve().name}` (Python backend)", "",
        f"Written by `ganrt export-triton --backend python` from the bundle at `{bundle.path.resolve()}` (manifest "
        f"sha256 `{bundle.sha256()[:16]}`): a {s.arch} generator, z {s.latent_dim}, "
        f"{f'{s.num_classes} classes' if s.conditional else 'unconditional'}, images {s.channels}x{s.height}x"
        f"{s.width}. Triton's Python backend runs ganrt's own runtime (`ganrt.runtime.load`, the same variants, "
        f"batch buckets and parity as `ganrt generate` and `ganrt serve`) on the copy of the bundle in each model's "
        f"`1/bundle/`. Every model takes {'; '.join(inputs)}, and returns `{out['name']}` "
        f"{out['dtype'].upper().replace('FLOAT32', 'FP32')} [B, {', '.join(map(str, out['shape'][1:]))}]; at most "
        f"{max_batch} images a request and a batch, formed by Triton's dynamic batcher.", "",
        "| model | ganrt variant | instances | preferred batch | max queue delay |", "|---|---|---|---|---|",
        *rows, "",
        "`auto` is chosen when the model loads, on the machine that serves it, by that Python environment's tuning "
        "record (`ganrt bench`, keyed by its library versions) or ganrt's default order; Triton's log says which "
        "variant runs and why.", "",
        "## Serve it", "",
        "```sh",
        "ganrt triton $PWD     # the Triton server of the nvidia-pytriton wheel: HTTP 8000, gRPC 8001, metrics 8002",
        "```", "",
        "`ganrt triton` starts `tritonserver` with the Python backend's stub set up and a backend Python that has "
        "ganrt with `numpy<2` (`--python`, `GANRT_TRITON_PYTHON`, or the `.venv-triton` beside your virtual "
        "environment: see ganrt's README), and stops it on Ctrl-C or SIGTERM leaving nothing behind.", "",
        "With your own Triton (NVIDIA's container, r24.10 or a release with the same Python backend), install ganrt "
        "into the Python its Python backend runs, with numpy below 2 (under numpy 2 that backend returns empty "
        "outputs without an error), then serve the repository as usual:", "",
        "```sh",
        "pip install 'ganrt[cpu]' 'numpy<2'          # or 'ganrt[gpu]' for CUDA variants",
        "tritonserver --model-repository=$PWD",
        "```", "",
        "## Call it", "",
        "```python",
        "import numpy as np",
        "import tritonclient.grpc as triton", "",
        "seeds = np.array([[0], [1], [2], [3]], np.int64)",
        "inputs = [triton.InferInput(\"seeds\", list(seeds.shape), \"INT64\")]",
        "inputs[0].set_data_from_numpy(seeds)",
        labels.rstrip("\n"),
        "client = triton.InferenceServerClient(\"localhost:8001\")",
        f"images = client.infer(\"{first}\", inputs).as_numpy(\"{out['name']}\")   # the images of ganrt generate",
        "```", "",
        "## Load it", "",
        "```sh",
        f"ganrt loadtest localhost:8001 --protocol grpc --model {first} --check {bundle.path.resolve()} "
        "--concurrency 1,8,64 --out lt/",
        f"ganrt loadtest http://localhost:8000 --protocol v2 --model {first} --check {bundle.path.resolve()}",
        "```", "",
        "`--check BUNDLE` compares every answer with offline generation of the same seeds by the model's variant.",
    ]
    return "\n".join(lines) + "\n"


def write_repository(bundle: Bundle, out: str | os.PathLike, options: TritonOptions | None = None,
                     progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write (atomically: staged beside ``out``, checked, then moved in) the model repository of ``bundle``;
    returns what it wrote: {"repository", "models": {name: {...}}, "skipped": {variant: why}, "notes": [...]}."""
    options = options or TritonOptions()
    _check_options(options)
    model_config_pb2()  # fail before any work without the schema
    out = Path(out)
    _check_out(out)
    graph = bundle.graph or {}
    if not graph.get("inputs") or not graph.get("outputs"):
        raise BundleError(f"bundle {bundle.path} describes no graph I/O; re-export it")
    bundle_max = int(graph.get("max_batch") or 0)
    if bundle_max < 1:
        raise BundleError(f"bundle {bundle.path} records no max batch; re-export it")
    max_batch = min(options.max_batch or bundle_max, bundle_max)
    prefix = options.model_name or bundle.path.resolve().name
    if options.backend == "python":
        models, skipped = plan_python_models(bundle, options, prefix), {}
    else:
        models, skipped = plan_models(bundle, options.device, prefix)
    if options.variants is not None and options.backend == "native":
        known = {m.variant for m in models}
        unknown = sorted(set(options.variants) - known)
        if unknown:
            why = "; ".join(f"{v}: {skipped[v]}" for v in unknown if v in skipped)
            raise ConfigError(f"--variants {', '.join(unknown)}: not in this repository" + (f" ({why})" if why else "")
                              + f"; it can hold {', '.join(sorted(known)) or 'nothing'} (--device {options.device})")
        models = [m for m in models if m.variant in options.variants]
    if not models:
        raise ConfigError(f"nothing in {bundle.path} that Triton can run on --device {options.device}"
                          + "".join(f"; {v}: {why}" for v, why in sorted(skipped.items())))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(out.parent / f".{out.name}.lock"):
            _recover(out)
            _check_out(out)
            return _write(bundle, out, options, models, skipped, graph, max_batch, progress)
    except LockBusy as e:
        raise ConfigError(f"another export-triton is writing {out} ({e.holder}); wait for it to finish") from None


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ConfigError(f"{out} exists and is not a ganrt Triton repository; choose another --out")


def _write(bundle: Bundle, out: Path, options: TritonOptions, models: list[Model], skipped: dict[str, str],
           graph: dict[str, Any], max_batch: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Stage the repository beside ``out``, check it, then swap it in (the caller holds the lock)."""
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.triton-", dir=out.parent))
    try:
        for m in models:
            progress(f"{m.name} ({', '.join(m.artifacts)})")
            m.config = build_config(m, bundle, options, max_batch)
            version = stage / m.name / "1"
            version.mkdir(parents=True)
            for file, artifact in m.files.items():
                shutil.copyfile(bundle.artifact_path(artifact), version / file)
            if options.backend == "python":
                (version / PYTHON_MODEL).write_text(MODEL_PY)
                copy_bundle(bundle, version / BUNDLE_COPY)
            (stage / m.name / "config.pbtxt").write_text(to_pbtxt(m.config))
        summary = {m.name: {"variant": m.variant, "artifacts": m.artifacts,
                            "sha256": {a: bundle.artifacts[a]["sha256"] for a in m.artifacts},
                            "runs_on": m.config.get("platform") or m.config.get("backend"),
                            "instances": m.config["instance_group"][0]["kind"]} for m in models}
        (stage / MARKER).write_text(json.dumps({
            "format": "ganrt.triton-repository", "backend": options.backend, "bundle": str(bundle.path.resolve()),
            "bundle_sha256": bundle.sha256(), "spec": bundle.spec.to_dict(), "graph": graph,
            "max_batch": max_batch, "models": summary}, indent=2))
        (stage / "README.md").write_text(_python_readme(bundle, models, max_batch) if options.backend == "python"
                                         else _readme(bundle, models, skipped, max_batch))
        progress("checking every config.pbtxt with Triton's schema and against its graph")
        problems, notes = check_repository(stage)
        if options.ort_tensorrt == "fp16":
            notes.append("precision_mode FP16 is TensorRT 10's FP16 builder flag, which TensorRT 11 removed (it "
                         "needs onnxruntime >= 1.27): there every graph runs in its own types, so serve "
                         "onnxruntime-fp16 for fp16 arithmetic")
        if problems:
            raise ExportError("the Triton repository failed its check, nothing was written: " + "; ".join(problems))
        _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"repository": str(out), "max_batch": max_batch, "models": summary, "skipped": skipped, "notes": notes}


def _replace_dir(stage: Path, out: Path) -> None:
    """Move ``stage`` to ``out``; a previous repository there is swapped out first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _recover(out: Path) -> None:
    """What a killed run left beside ``out``: its staging folder (removed) and, killed between the two moves
    of :func:`_replace_dir`, the previous repository swapped out (put back when nothing took its place)."""
    for stage in out.parent.glob(f".{out.name}.triton-*"):
        shutil.rmtree(stage, ignore_errors=True)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists():
            os.replace(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _check_options(o: TritonOptions) -> None:
    if o.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {o.backend!r}")
    if o.device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {o.device!r}")
    if o.ort_tensorrt not in ORT_TENSORRT:
        raise ConfigError(f"ort_tensorrt must be one of {', '.join(ORT_TENSORRT)}, got {o.ort_tensorrt!r}")
    if o.ort_tensorrt != "none" and o.backend == "python":
        raise ConfigError("--ort-tensorrt configures Triton's onnxruntime backend: drop it with --backend python")
    if o.ort_tensorrt != "none" and o.device != "gpu":
        raise ConfigError("the TensorRT accelerator of onnxruntime runs on GPU instances: drop it or use --device gpu")
    for name in ("instances", "max_batch"):
        value = getattr(o, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if o.max_queue_delay_us is not None and (isinstance(o.max_queue_delay_us, bool) or
                                             not isinstance(o.max_queue_delay_us, int) or
                                             not 0 <= o.max_queue_delay_us <= 10_000_000):
        raise ConfigError(f"max_queue_delay_us must be an integer in [0, 10000000], got {o.max_queue_delay_us!r}")
