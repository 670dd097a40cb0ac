"""export(): a generator -> a verified bundle (weights, ONNX fp32/fp16/int8, TensorRT engines, CPU fast path).

The CPU fast path (``cpu_rewrite``, on by default; never alters "onnx-fp32"): "onnx-fp32-rw", the fp32 graph
with every ConvTranspose the exact rewrite can express turned into convolutions (ganrt.export.rewrite, form
"auto": one convolution per output phase for layers with 16 or more output channels, the single form for the
narrow ones such as the RGB/gray output layer), verified like the others; precision "bf16" ->
"onnx-bf16", the same rewritten graph (the same file as onnx-fp32-rw when that ships) to run with OpenVINO's
bf16 hint, its parity measured through OpenVINO;
``openvino_int8`` -> "openvino-int8", an NNCF-quantized OpenVINO IR of the rewritten graph
(ganrt.export.openvino). Every ONNX/IR entry records ``"rewritten"`` and, when true, ``made_by.rewrite``.

Everything is built and verified in a staging directory beside the bundle, under the bundle's writer lock
(ganrt.bundle.BundleWriter: one export at a time); only when every requested variant has passed (or
``allow_failed_parity`` keeps it, marked ``passed=false``) are the files moved in, under names the current
manifest does not use, and the manifest replaced, last. A failed or killed export leaves the bundle as it
was. Re-exporting into an existing bundle of the same generator replaces only the artifacts it rebuilds (the
policy: ganrt.bundle.plan_merge); each artifact it drops is logged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganrt.bundle import WEIGHTS, WEIGHTS_ARTIFACT, Bundle, BundleWriter, Staged, onnx_artifact_name, onnx_file_name
from ganrt.errors import ConfigError, SpecError
from ganrt.export import graph as G
from ganrt.export.torch_weights import write_weights
from ganrt.export.verify import (
    TOLERANCES,
    Tolerance,
    Verification,
    make_reference,
    raise_if_failed,
    verified_batches,
    verify_onnx,
)
from ganrt.fileio import sha256_file
from ganrt.postprocess import OUTPUT_FORMATS
from ganrt.spec import GeneratorSpec

EXPORT_PRECISIONS = ("fp32", "fp16", "int8", "bf16")
# openvino-int8-small (the single-form rewrite) serves batches up to this: on the demo generator (AVX-512 CPU,
# int8) it ran 0.83/0.63/0.54x onnxruntime fp32 at batch 1/2/3 against 1.02/0.68/0.56x for the main graph, and
# the two tied at batch 4 (main graph faster from 6)
SMALL_BATCH_MAX = 3
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to build, and how. ``ExportOptions(precisions=("fp32", "fp16"), max_batch=16)``.

    precisions: any of fp32, fp16, int8, bf16 (fp32 is always built: the others derive from it). bf16 is the
        ConvTranspose-rewritten fp32 graph for OpenVINO's bf16 hint ("onnx-bf16"; needs OpenVINO).
    cpu_rewrite: also ship "onnx-fp32-rw" (the rewritten fp32 graph) when the rewrite changes the graph.
    openvino_int8: also ship "openvino-int8", an NNCF int8 OpenVINO IR of the rewritten graph (needs OpenVINO
        and NNCF), calibrated on ``openvino_calibration_size`` latents; int8 tolerance.
    tensorrt: also build TensorRT engines for each exported precision (needs a GPU and TensorRT; without them
        the graphs are linted against TensorRT's operator table, the rest is written, and BackendUnavailable
        says so). trt_hardware_compatibility: "none" (the plan runs on the GPU model that built it) or
        "same-cc" (every GPU of its compute capability).
    verify_batch_cap: the largest batch verified (batches 1, 3 and min(max_batch, cap)).
    allow_failed_parity: keep a variant outside its tolerance, marked ``passed=false``, instead of failing.
    int8_op_types: the op types int8 quantizes (None: ganrt.export.int8.DEFAULT_OP_TYPES; empty: every op
        type); int8_calibration: "minmax", "percentile" or "entropy".
    torch_precisions: also ship the reference weights cast to these ("fp16", "bf16") for the torch CUDA
        variants, each verified against fp32 (ganrt.export.torch_weights).
    wait_for_lock: seconds to wait when another export is writing the same bundle (0: fail at once).
    """

    precisions: tuple[str, ...] = ("fp32",)
    max_batch: int = 64
    output_format: str = "uint8-nhwc"
    opset: int = 18
    tensorrt: bool = False
    exporter: str = "auto"
    verify_batch_cap: int = 16
    allow_failed_parity: bool = False
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    int8_op_types: tuple[str, ...] | None = None
    calibration_size: int = 64
    int8_calibration: str = "minmax"
    fp16_safe_max: float | None = None
    trt_workspace_mb: int = 1024
    trt_hardware_compatibility: str = "none"
    cpu_rewrite: bool = True
    openvino_int8: bool = False
    openvino_calibration_size: int = 128
    torch_precisions: tuple[str, ...] = ()  # "fp16", "bf16": torch weights for the GPU path on torch alone
    wait_for_lock: float = 0.0

    def checked(self) -> "ExportOptions":
        """These options validated (ConfigError naming the option), fp32 first among the precisions."""
        precisions = list(dict.fromkeys(self.precisions))
        bad = [p for p in precisions if p not in EXPORT_PRECISIONS]
        if bad or not precisions:
            raise ConfigError(f"precisions must be a non-empty subset of {EXPORT_PRECISIONS}, got {precisions}")
        if "fp32" not in precisions:  # every other precision is derived from, and verified beside, the fp32 graph
            precisions.insert(0, "fp32")
        for name, value, lo, hi in (("max_batch", self.max_batch, 1, 1 << 20),
                                    ("opset", self.opset, 17, 23),
                                    ("verify_batch_cap", self.verify_batch_cap, 1, 1 << 20),
                                    ("calibration_size", self.calibration_size, 1, 1 << 20),
                                    ("openvino_calibration_size", self.openvino_calibration_size, 8, 1 << 20),
                                    ("trt_workspace_mb", self.trt_workspace_mb, 16, 1 << 20)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                hint = " (18 is the tested default)" if name == "opset" else ""
                raise ConfigError(f"{name} must be an integer >= {lo}" + (f" and <= {hi}" if hi < 1 << 20 else "")
                                  + f", got {value!r}{hint}")
        from ganrt.export.tensorrt import HARDWARE_COMPATIBILITY

        if self.trt_hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise ConfigError(f"trt_hardware_compatibility must be one of {', '.join(HARDWARE_COMPATIBILITY)}, "
                              f"got {self.trt_hardware_compatibility!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")
        if not isinstance(self.wait_for_lock, (int, float)) or self.wait_for_lock < 0:
            raise ConfigError(f"wait_for_lock must be a number of seconds >= 0, got {self.wait_for_lock!r}")
        from ganrt.export.torch_weights import check_precisions

        return replace(self, precisions=tuple(precisions), tolerances={**TOLERANCES, **(self.tolerances or {})},
                       torch_precisions=check_precisions(self.torch_precisions))


def _quiet(_: str) -> None:
    pass


def _require_libraries(opts: ExportOptions) -> None:
    """Fail before any work when an option needs a library or device this machine lacks (TensorRT excepted:
    without it the graphs are linted for it, see _build_engines)."""
    if "bf16" in opts.precisions or opts.openvino_int8:
        from ganrt.export.openvino import require_openvino

        require_openvino("precision bf16 (its parity runs through OpenVINO's bf16 hint)" if "bf16" in opts.precisions
                         else "--openvino-int8")
    if opts.openvino_int8:
        try:
            import nncf  # noqa: F401
        except ImportError:
            raise ConfigError("--openvino-int8 needs NNCF, which is not installed: `pip install 'ganrt[cpu]'` "
                              "(or `pip install nncf`)") from None


def _check_weights_rebuild(generator: nn.Module, spec: GeneratorSpec) -> None:
    """The torch backend rebuilds the generator from spec + weights: make sure that works now.

    A user's module is rebuilt through its factory when the spec names one (the caller gave that name, so it
    is trusted here); without one, the bundle's graphs are all that run it.
    """
    from ganrt.models import build_generator

    if spec.external and not spec.factory:
        return
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    try:
        rebuilt = build_generator(spec, trust_code=True)
        rebuilt.load_state_dict(state, strict=True)
    except SpecError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fix = (f"make factory {spec.factory!r} build the module these weights come from" if spec.external else
               "give the spec of this module, or GeneratorSpec(latent_dim=..., channels=..., height=..., "
               "width=...) for your own module")
        raise SpecError(f"the module's weights do not fit the generator its spec describes (arch {spec.arch!r}): "
                        f"{first}. {fix}") from None


def _entry_extra(v: Verification) -> dict[str, Any]:
    return {"tolerance": v.tolerance, "failures": v.failures}


def export(generator: nn.Module, out_dir: str | os.PathLike, *, spec: GeneratorSpec,
           options: ExportOptions | None = None, source: dict[str, Any] | None = None,
           progress: Progress | None = None) -> Bundle:
    """Export ``generator`` (any ``nn.Module`` taking (z[, labels][, truncation]) and returning images in
    ``spec.output_range``) to a verified bundle in ``out_dir``; returns the opened :class:`Bundle`.

    ``spec``: a family's spec, or ``GeneratorSpec(latent_dim=..., num_classes=..., channels=..., height=...,
    width=...)`` for your own module (called with exactly the inputs it takes, as in the graph).
    ``options``: :class:`ExportOptions` (default: fp32 + the CPU fast path's rewritten graph, max batch 64).
    """
    log = progress or _quiet
    if not isinstance(spec, GeneratorSpec):
        raise SpecError(f"spec must be a ganrt.spec.GeneratorSpec, got {type(spec).__name__}")
    opts = (options or ExportOptions()).checked()
    _require_libraries(opts)
    source = dict(source or {"kind": "module", "class": f"{type(generator).__module__}.{type(generator).__qualname__}"})
    if not isinstance(generator, nn.Module):
        raise SpecError(f"a generator must be a torch.nn.Module, got {type(generator).__name__}")
    with BundleWriter(out_dir, spec, wait=opts.wait_for_lock, log=log) as writer:  # lock, destination checked
        _check_weights_rebuild(generator, spec)
        module = G.GraphModule(G.prepare_generator(generator), spec, opts.output_format).eval()
        log(f"checking the generator against its spec ({spec.arch}, z {spec.latent_dim}, "
            f"images {spec.channels}x{spec.height}x{spec.width})")
        G.check_against_spec(module, spec, seeds=[0, 1, 2])
        graph = G.graph_description(spec, output_format=opts.output_format, opset=opts.opset,
                                    max_batch=opts.max_batch)
        current = writer.current()
        staged, verifications, reference = _build(module, generator, spec, writer.stage, opts, source, log)
        if not opts.allow_failed_parity:
            raise_if_failed(verifications)
        engines_missing = None
        if opts.tensorrt:
            cache = current.artifact_path("timing-cache") if current and "timing-cache" in current.artifacts else None
            engines, engines_missing = _build_engines(writer.stage, staged, spec, reference, opts, cache, log)
            staged += engines
        bundle = writer.commit(graph=graph, source=source, staged=staged)
    log(f"bundle written: {bundle.path}")
    if engines_missing:
        from ganrt.errors import BackendUnavailable

        raise BackendUnavailable(f"{bundle.path} was written without TensorRT engines: {engines_missing}")
    return bundle


def _build(module, generator, spec, stage: Path, opts: ExportOptions, source, log):
    """Build and verify every artifact in ``stage``; returns ([Staged], verifications, the torch reference)."""
    import onnx
    import onnxruntime

    staged: list[Staged] = []
    weights = stage / WEIGHTS
    write_weights(weights, generator, spec, source)
    staged.append(Staged(WEIGHTS_ARTIFACT, weights, {"file": WEIGHTS, "kind": "weights", "precision": "fp32",
                                                     "made_by": {"format": "ganrt.checkpoint",
                                                                 "torch": torch.__version__}}))

    log(f"exporting to ONNX (opset {opts.opset}, exporter {opts.exporter})")
    raw_path = stage / "export.raw.onnx"
    made_by = G.export_onnx(module, spec, raw_path, opset=opts.opset, exporter=opts.exporter, log=log)
    full = onnx.load(str(raw_path))
    full, slim_info = G.simplify(full)
    G.name_batch_axis(full)
    log(f"  onnxslim: {slim_info['nodes_before']} -> {slim_info['nodes_after']} nodes")
    G.check_model(full, "the fp32 graph")
    base_made_by = {**made_by, **G.onnx_versions(), "onnxruntime": onnxruntime.__version__,
                    "simplify": slim_info}
    full_paths = {"fp32": stage / "full.fp32.onnx"}
    onnx.save(full, str(full_paths["fp32"]))

    precisions, tolerances = opts.precisions, opts.tolerances
    batches = verified_batches(opts.max_batch, opts.verify_batch_cap)
    log(f"computing the torch reference at batch {', '.join(map(str, batches))}")
    reference = make_reference(module, spec, batches)
    verifications: list[Verification] = []
    made: dict[str, dict[str, Any]] = {"fp32": dict(base_made_by)}
    if opts.torch_precisions:
        from ganrt.export.torch_weights import build_torch_weights

        torch_staged, torch_checks = build_torch_weights(module, generator, spec, stage,
                                                         precisions=opts.torch_precisions, reference=reference,
                                                         tolerances=tolerances, source=source, log=log)
        staged += torch_staged
        verifications += torch_checks

    if "fp16" in precisions:
        from ganrt.export.fp16 import convert_fp16

        log("converting to fp16 (sensitive nodes kept fp32)")
        model16, info = convert_fp16(full, spec, safe_max=opts.fp16_safe_max)
        G.check_model(model16, "the fp16 graph")
        full_paths["fp16"] = stage / "full.fp16.onnx"
        onnx.save(model16, str(full_paths["fp16"]))
        made["fp16"] = {**base_made_by, **info}
    if "int8" in precisions:
        from ganrt.export.int8 import quantize_int8

        log(f"quantizing to int8 (QDQ, symmetric, calibration {opts.calibration_size} latents)")
        full_paths["int8"] = stage / "full.int8.onnx"
        op_types = None if opts.int8_op_types is None else list(opts.int8_op_types)
        info = quantize_int8(full_paths["fp32"], full_paths["int8"], spec, op_types=op_types,
                             calibration_size=opts.calibration_size, calibration=opts.int8_calibration,
                             work_dir=stage)
        G.check_model(onnx.load(str(full_paths["int8"])), "the int8 graph")
        made["int8"] = {**base_made_by, **info}

    for precision in (p for p in precisions if p != "bf16"):
        name = onnx_artifact_name(precision)
        log(f"verifying {name} against torch fp32 (onnxruntime CPU, batch {', '.join(map(str, batches))})")
        v = verify_onnx(full_paths[precision], reference, spec, variant=name, tolerance=tolerances[precision])
        log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
        verifications.append(v)
        shipped = stage / onnx_file_name(precision)
        onnx.save(G.drop_output(onnx.load(str(full_paths[precision]))), str(shipped))
        staged.append(Staged(name, shipped, {"file": onnx_file_name(precision), "kind": "onnx",
                                             "precision": precision, "made_by": made[precision], "parity": v.parity,
                                             "passed": v.passed, "rewritten": False, **_entry_extra(v)}))
    if opts.cpu_rewrite or "bf16" in precisions or opts.openvino_int8:
        staged += _build_cpu_fast_path(full, spec, stage, reference, verifications, opts, base_made_by, log)
    return staged, verifications, reference


def _build_cpu_fast_path(full, spec, stage: Path, reference, verifications: list[Verification],
                         opts: ExportOptions, base_made_by: dict[str, Any], log) -> list[Staged]:
    """"onnx-fp32-rw", "onnx-bf16" and "openvino-int8": the rewritten graph and what is made from it."""
    import onnx

    from ganrt.export.rewrite import rewrite_conv_transpose

    precisions, cpu_rewrite, openvino_int8, tolerances = opts.precisions, opts.cpu_rewrite, opts.openvino_int8, \
        opts.tolerances
    staged: list[Staged] = []
    rewritten, report = rewrite_conv_transpose(full, form="auto")
    changed = report.changed
    log(f"rewriting ConvTranspose for CPU backends: {len(report.rewritten)} rewritten, {len(report.left)} left"
        + "".join(f"\n  left {r['node']}: {r['reason']}" for r in report.left))
    rw_made_by = {**base_made_by, "rewrite": report.to_dict()}
    rw_full = stage / "full.fp32.rw.onnx"
    if changed:
        G.check_model(rewritten, "the rewritten fp32 graph")
        onnx.save(rewritten, str(rw_full))
    else:
        onnx.save(full, str(rw_full))  # nothing to rewrite: bf16/int8 start from the graph as it is
    rw_file = stage / onnx_file_name("fp32", rewritten=True)
    onnx.save(G.drop_output(onnx.load(str(rw_full))), str(rw_file))

    if cpu_rewrite and changed:
        name = onnx_artifact_name("fp32", rewritten=True)
        log(f"verifying {name} against torch fp32 (onnxruntime CPU)")
        v = verify_onnx(rw_full, reference, spec, variant=name, tolerance=tolerances["fp32"])
        log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
        verifications.append(v)
        staged.append(Staged(name, rw_file, {"file": onnx_file_name("fp32", rewritten=True), "kind": "onnx",
                                             "precision": "fp32", "made_by": rw_made_by, "parity": v.parity,
                                             "passed": v.passed, "rewritten": True, **_entry_extra(v)}))
    elif cpu_rewrite:
        log("  no ConvTranspose the rewrite can express: no onnx-fp32-rw")

    if "bf16" in precisions or openvino_int8:
        from ganrt.export.openvino import bf16_hardware, verify_openvino

    if "bf16" in precisions:
        name = onnx_artifact_name("bf16")
        hardware = bf16_hardware()
        log(f"verifying {name} (the {'rewritten ' if changed else ''}fp32 graph, OpenVINO bf16 hint) against "
            "torch fp32" + ("" if hardware else ": this CPU has no bf16 support, OpenVINO runs it in f32 here "
                            "(bf16_hardware false in the manifest); re-verify on a bf16 CPU"))
        v = verify_openvino(rw_full, reference, spec, variant=name, tolerance=tolerances["bf16"], precision="bf16")
        v.parity["bf16_hardware"] = hardware
        log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
        verifications.append(v)
        # the same bytes as onnx-fp32-rw: share its file when that ships, rather than store the weights twice
        shares = cpu_rewrite and changed
        bf16_file = onnx_file_name("fp32", rewritten=True) if shares else onnx_file_name("bf16")
        shipped = rw_file if shares else stage / bf16_file
        if not shares:
            shutil.copyfile(rw_file, shipped)
        staged.append(Staged(name, shipped, {"file": bf16_file, "kind": "onnx", "precision": "bf16",
                                       "made_by": {**rw_made_by, "graph": "fp32 weights and arithmetic; bf16 is the "
                                                   "OpenVINO inference precision hint"},
                                       "parity": v.parity, "passed": v.passed, "rewritten": changed,
                                       "runtime": "openvino", "inference_hint": "bf16", "bf16_hardware": hardware,
                                       **_entry_extra(v)}))

    if openvino_int8:
        small_full = None
        if changed:
            small, small_report = rewrite_conv_transpose(full, form="single")
            if [r["into"] for r in small_report.rewritten] != [r["into"] for r in report.rewritten]:
                small_full = (stage / "full.fp32.rw-single.onnx", small_report.to_dict())
                G.check_model(small, "the single-form rewritten fp32 graph")
                onnx.save(small, str(small_full[0]))
        made_by = rw_made_by if changed else base_made_by
        staged += _openvino_int8(rw_full, small_full, spec, reference, stage, verifications, made_by=made_by,
                                 rewritten=changed, calibration_size=opts.openvino_calibration_size,
                                 tolerance=tolerances["int8"], log=log)
    return staged


def _openvino_int8(rw_full: Path, small_full: tuple[Path, dict[str, Any]] | None, spec, reference, stage: Path,
                   verifications: list[Verification], *, made_by, rewritten: bool, calibration_size: int,
                   tolerance, log) -> list[Staged]:
    """"openvino-int8" (and its small-batch graph "openvino-int8-small"), NNCF-quantized OpenVINO IRs.

    Every weighted layer is quantized; when that fails the int8 tolerance, the first one (the matrix
    product on the latent) is kept in fp32 and the graph quantized again. ``small_full`` (the single-form
    rewrite's path and rewrite report) is quantized the same way for the backend to run at batches up to
    SMALL_BATCH_MAX (fewer, larger convolutions: less per-node overhead where compute is small). It ships
    only when it passes and draws exactly the main graph's images on every verified batch (int8 arithmetic
    is exact, so it does when the calibration gives both graphs the same scales): a seed's image must not
    depend on the batch it is drawn in. Otherwise it is left out, with the reason in the log; it never fails
    the export.
    """
    from ganrt.export.openvino import quantize_int8, save_ir, verify_openvino, without_raw_output

    what = "the rewritten graph" if rewritten else "the graph"
    log(f"quantizing {what} to OpenVINO int8 (NNCF, calibration {calibration_size} latents)")
    quantized, info = quantize_int8(rw_full, spec, calibration_size=calibration_size, keep_first=False)
    v = verify_openvino(quantized, reference, spec, variant="openvino-int8", tolerance=tolerance, precision="int8")
    keep_first = not v.passed
    if keep_first:
        log(f"  every layer in int8 failed ({v.summary()}); quantizing again with the first layer in fp32")
        quantized, info = quantize_int8(rw_full, spec, calibration_size=calibration_size, keep_first=True)
        v = verify_openvino(quantized, reference, spec, variant="openvino-int8", tolerance=tolerance,
                            precision="int8")
    log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
    verifications.append(v)
    graphs = [("openvino-int8", quantized, {**made_by, **info}, v)]
    if small_full is not None and v.passed:
        small_path, small_report = small_full
        small, small_info = quantize_int8(small_path, spec, calibration_size=calibration_size, keep_first=keep_first)
        sv = verify_openvino(small, reference, spec, variant="openvino-int8-small", tolerance=tolerance,
                             precision="int8")
        same = bool(np.array_equal(sv.images, v.images))
        sv.parity["same_images_as_openvino_int8"] = same
        if sv.passed and same:
            log(f"  openvino-int8-small (single-form rewrite, batches 1-{SMALL_BATCH_MAX}): passed, the same images "
                "as openvino-int8")
            graphs.append(("openvino-int8-small", small, {**made_by, **small_info, "rewrite": small_report}, sv))
        else:
            why = "its images differ from openvino-int8's" if sv.passed else f"it failed parity ({sv.summary()})"
            log(f"  no small-batch graph: {why}; every batch runs openvino-int8")

    staged = []
    for name, model, by, ver in graphs:
        stem = "model.int8" if name == "openvino-int8" else "model.int8.small"
        xml, bin_ = save_ir(without_raw_output(model), stage / "openvino" / f"{stem}.xml")
        entry = {"file": f"openvino/{stem}.xml", "kind": "openvino-ir", "precision": "int8", "made_by": by,
                 "parity": ver.parity, "passed": ver.passed, "rewritten": rewritten, "runtime": "openvino",
                 "weights_artifact": f"{name}-bin", **_entry_extra(ver)}
        if name == "openvino-int8" and len(graphs) > 1:
            entry["small_batch_graph"] = {"artifact": "openvino-int8-small", "max_batch": SMALL_BATCH_MAX}
        if name == "openvino-int8-small":
            entry["small_batch_of"] = "openvino-int8"
        staged.append(Staged(name, xml, entry))
        staged.append(Staged(f"{name}-bin", bin_, {"file": f"openvino/{stem}.bin", "kind": "other",
                                                   "precision": None, "made_by": {"weights_of": name}}))
    return staged


def _build_engines(stage: Path, staged: list[Staged], spec, reference, opts: ExportOptions,
                   timing_cache: Path | None, log) -> tuple[list[Staged], str | None]:
    """(the engines, None), or ([], why not) when this machine cannot build them; the graphs they come from
    are linted for TensorRT first either way."""
    from ganrt.errors import ParityError
    from ganrt.export.tensorrt import build_engine, lint_engine_sources, tensorrt_missing, verify_engine

    sources = [s for s in staged if s.entry["kind"] == "onnx" and s.entry.get("passed")  # the plain graphs
               and not s.entry.get("rewritten") and s.entry["precision"] != "bf16"]
    lint = lint_engine_sources({s.name: s.path for s in sources}, log)
    missing = tensorrt_missing()
    if missing:
        return [], f"{missing}. {lint}; build the engines on the target GPU with --tensorrt"
    engines: list[Staged] = []
    cache = stage / "timing.cache"
    if timing_cache is not None:
        shutil.copyfile(timing_cache, cache)  # the bundle's own cache is never written in place
    for s in sources:
        kw = s.entry
        log(f"building a TensorRT engine from {s.name}")
        engine_path, entry = build_engine(s.path, stage, precision=kw["precision"], max_batch=opts.max_batch,
                                          workspace_mb=opts.trt_workspace_mb, timing_cache=cache,
                                          hardware_compatibility=opts.trt_hardware_compatibility, log=log)
        check = verify_engine(engine_path, reference, spec, variant=entry["name"],
                              tolerance=opts.tolerances[kw["precision"]])
        entry.update(check)
        p = check["parity"]
        log(f"  {entry['name']}: max |diff| {p['max_abs_diff']:.0f} levels, PSNR {p['psnr_db']} dB"
            + ("" if check["passed"] else f" FAILED ({', '.join(check['failures'])})"))
        if not check["passed"] and not opts.allow_failed_parity:
            raise ParityError(f"{entry['name']} failed parity ({', '.join(check['failures'])}); nothing was "
                              "written to the bundle. Pass --allow-failed-parity to keep it marked passed=false")
        engines.append(Staged(entry.pop("name"), engine_path, entry))
    if engines and cache.is_file():
        trt = engines[0].entry["made_by"]["tensorrt"]
        engines.append(Staged("timing-cache", cache, {"file": "timing.cache", "kind": "timing_cache",
                                                      "precision": None, "made_by": {"tensorrt": trt}}))
    return engines, None


def export_checkpoint(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      options: ExportOptions | None = None, ema: bool = True, trust_code: bool = False,
                      progress: Progress | None = None) -> Bundle:
    """Export a ganrt checkpoint's generator (its EMA weights by default) with :class:`ExportOptions`.

    A checkpoint of a user's module names the code that rebuilds it; that code is imported only with
    ``trust_code=True`` (CLI: --trust-code).
    """
    from safetensors import safe_open

    from ganrt.checkpoint import load_generator, read_metadata

    path = Path(checkpoint_path)
    generator, spec = load_generator(path, ema=ema, trust_code=trust_code)
    meta = read_metadata(path)
    with safe_open(str(path), framework="pt") as f:
        has_ema = any(k.startswith("G_ema.") for k in f.keys())
    source = {"kind": "checkpoint", "path": str(path), "sha256": sha256_file(path), "step": meta.get("step", 0),
              "weights": "G_ema" if ema and has_ema else "G", "dataset": meta.get("dataset") or {}}
    return export(generator, out_dir, spec=spec, options=options, source=source, progress=progress)
