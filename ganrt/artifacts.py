"""The one table of artifact kinds a bundle holds: how export builds each, and which runtime rows run it.

A row says, without importing anything heavy:

- ``build``: the export function that makes it (``"module:function"``, imported by export only: the runtime
  never imports export), called as ``build(job, row) -> list[Staged]`` in table order, so a row may use what an
  earlier one made (every graph starts from onnx-fp32's graph);
- ``wanted``: whether an ``ExportOptions`` asks for it (``ExportOptions.artifacts`` names any row by name);
- ``runs``: which runtime backend rows (ganrt.runtime.backends) run it, at which precision, with which
  artifact-implied variant options, and how much they prefer it (``rank``: for one backend and precision, a
  bundle's artifact of the smallest rank is the one that runs);
- ``tolerance``: the precision row (ganrt.precisions) whose tolerance gates it;
- ``check``: how export checks the artifact itself (with its float output, so NaN/Inf are counted) before every
  runtime variant of it is verified through the runtime's own backend code at every batch bucket
  (ganrt.export.variants);
- ``footprint``: an upper estimate of the bytes its build writes in the staging directory, per byte of the
  generator's fp32 weights (what a full disk is told the export needs).

Export iterates the rows (ganrt.export.pipeline); the runtime backends' ``variants()`` and the Triton writer
read "which artifact runs this precision" from :func:`pick` and :func:`runs_of`. A backend with its own
artifact (an ``.mlpackage`` directory, say) is one builder module, one runtime module, one row here and one
in ganrt.runtime.backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runs:
    """One runtime variant an artifact serves: ``backend`` runs it as its ``precision`` variant."""

    backend: str  # a row of ganrt.runtime.backends.BACKENDS
    precision: str  # the variant's precision (OpenVINO runs an fp32 graph as bf16 under its precision hint)
    options: tuple[str, ...] = ()  # variant options the artifact itself implies ("rw": the rewritten graph)
    rank: int = 0  # among the artifacts a backend could run for this precision and options: smaller first


@dataclass(frozen=True)
class ArtifactRow:
    name: str  # the manifest artifact name (engines: "trt-<precision>", suffixed per GPU and TensorRT)
    kind: str  # the manifest kind ("weights", "onnx", "openvino-ir", "engine", or a new backend's own)
    precision: str | None
    build: str  # "module:function" in ganrt.export: build(job, row) -> [Staged]
    wanted: Callable[[Any], bool]  # ExportOptions -> whether it is asked for
    runs: tuple[Runs, ...]
    tolerance: str  # a row of ganrt.precisions
    check: str  # how the artifact itself is checked at export, in words (the runtime variants come after)
    footprint: float = 1.0  # staging bytes per byte of fp32 weights (an upper estimate)

    def asked(self, options: Any) -> bool:
        """Whether an ExportOptions asks for this row: by its own options, or by name in ``options.artifacts``."""
        return self.name in options.artifacts or bool(self.wanted(options))


def _precision(p: str) -> Callable[[Any], bool]:
    return lambda o: p in o.precisions


def _torch_precision(p: str) -> Callable[[Any], bool]:
    return lambda o: p in o.torch_precisions


def _engine(p: str) -> Callable[[Any], bool]:
    return lambda o: o.tensorrt and p in o.precisions


def _engine_row(p: str) -> ArtifactRow:
    return ArtifactRow(f"trt-{p}", "engine", p, "ganrt.export.builders:engine", _engine(p), (Runs("tensorrt", p),),
                       p, f"TensorRT on this GPU, layer precisions by the engine inspector (from onnx-{p})", 1.0)


ARTIFACTS: dict[str, ArtifactRow] = {r.name: r for r in (
    ArtifactRow("weights", "weights", "fp32", "ganrt.export.builders:weights", lambda o: True,
                (Runs("torch", "fp32"), Runs("torch", "fp16", rank=1), Runs("torch", "bf16", rank=1)),
                "fp32", "the torch fp32 reference itself (torch casts it to fp16/bf16 at load on CUDA)", 1.0),
    ArtifactRow("onnx-fp32", "onnx", "fp32", "ganrt.export.builders:onnx_fp32", lambda o: True,
                (Runs("onnxruntime", "fp32"), Runs("openvino", "fp32", rank=1), Runs("openvino", "bf16", rank=2)),
                "fp32", "onnxruntime CPU", 4.0),  # the raw export, the simplified graph and the shipped one
    ArtifactRow("onnx-fp16", "onnx", "fp16", "ganrt.export.builders:onnx_fp16", _precision("fp16"),
                (Runs("onnxruntime", "fp16"),), "fp16", "onnxruntime CPU", 1.0),
    ArtifactRow("onnx-int8", "onnx", "int8", "ganrt.export.builders:onnx_int8", _precision("int8"),
                (Runs("onnxruntime", "int8"),), "int8", "onnxruntime CPU", 1.5),
    # the rewrite measured faster on OpenVINO (docs/export-notes.md); OpenVINO's bf16 kernels do not cover
    # deconvolution, so its bf16 runs a rewritten graph too
    ArtifactRow("onnx-fp32-rw", "onnx", "fp32", "ganrt.export.builders:onnx_fp32_rw", lambda o: o.cpu_rewrite,
                (Runs("onnxruntime", "fp32", ("rw",)), Runs("openvino", "fp32"), Runs("openvino", "bf16", rank=1)),
                "fp32", "onnxruntime CPU", 2.0),
    ArtifactRow("onnx-bf16", "onnx", "bf16", "ganrt.export.builders:onnx_bf16", _precision("bf16"),
                (Runs("openvino", "bf16"),), "bf16", "OpenVINO CPU with its bf16 precision hint", 1.0),
    ArtifactRow("openvino-int8", "openvino-ir", "int8", "ganrt.export.builders:openvino_int8",
                lambda o: o.openvino_int8, (Runs("openvino", "int8"),), "int8",
                "OpenVINO CPU (every layer int8, else the first kept fp32; a small-batch graph only when it draws "
                "the same images)", 2.0),
    ArtifactRow("weights-fp16", "weights", "fp16", "ganrt.export.builders:torch_weights", _torch_precision("fp16"),
                (Runs("torch", "fp16"),), "fp16", "torch in fp16 (on CUDA, else on the CPU)", 0.5),
    ArtifactRow("weights-bf16", "weights", "bf16", "ganrt.export.builders:torch_weights", _torch_precision("bf16"),
                (Runs("torch", "bf16"),), "bf16", "torch in bf16 (on CUDA, else on the CPU)", 0.5),
    *(_engine_row(p) for p in ("fp32", "fp16", "int8")),
)}
KINDS: tuple[str, ...] = tuple(dict.fromkeys(r.kind for r in ARTIFACTS.values()))


def row_of(name: str, entry: Mapping[str, Any] | None = None) -> ArtifactRow | None:
    """The row of a bundle's artifact: by name, or for an engine by its kind and precision; None for the files
    that come with an artifact (an IR's weights, a small-batch graph, the TensorRT timing cache)."""
    if name in ARTIFACTS:
        return ARTIFACTS[name]
    if entry is not None and entry.get("kind") == "engine":
        return ARTIFACTS.get(f"trt-{entry.get('precision')}")
    return None


def candidates(backend: str, precision: str, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The artifacts ``backend`` can run as its ``precision`` variant with ``options``, preferred first."""
    found = [(run.rank, i, r.name) for i, r in enumerate(ARTIFACTS.values()) for run in r.runs
             if (run.backend, run.precision, run.options) == (backend, precision, tuple(options))]
    return tuple(name for _, _, name in sorted(found))


def pick(artifacts: Mapping[str, Any], backend: str, precision: str, options: tuple[str, ...] = ()) -> str | None:
    """The artifact of a bundle that ``backend`` runs as its ``precision`` variant with ``options``, or None."""
    return next((name for name in candidates(backend, precision, options) if name in artifacts), None)


def runs_of(backend: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every (precision, artifact-implied options) the table says ``backend`` runs, in table order."""
    return list(dict.fromkeys((run.precision, run.options) for r in ARTIFACTS.values() for run in r.runs
                              if run.backend == backend))


def casts(backend: str) -> tuple[str, ...]:
    """The precisions ``backend`` makes at load time from an artifact of another precision (torch casts its fp32
    weights; OpenVINO runs an fp32 graph under its bf16 hint)."""
    return tuple(dict.fromkeys(run.precision for r in ARTIFACTS.values() for run in r.runs
                               if run.backend == backend and run.precision != r.precision))
