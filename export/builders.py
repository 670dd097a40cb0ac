"""The builders the table of artifacts names (ganrt.artifacts ``build``): ``build(job, row) -> [Staged]``.

Each writes its artifact (and the files that come with it) into the staging directory and checks the artifact
itself against the torch reference (``row.check``), recording the figures in its manifest entry; the runtime
variants of it are verified afterwards (ganrt.export.variants). Rows run in table order and share what earlier
ones made through the :class:`Job`: the fp32 graph every other graph starts from (``job.graphs["fp32"]``,
made by :func:`onnx_fp32`), and the ConvTranspose-rewritten graph (:meth:`Job.rewritten`, made on first need).

- "onnx-fp32-rw" (``cpu_rewrite``): the fp32 graph with every ConvTranspose the exact rewrite can express turned
  into convolutions (ganrt.export.rewrite, form "auto": one convolution per output phase for layers with 16 or
  more output channels, the single form for narrow ones such as the RGB/gray output layer); never alters
  "onnx-fp32"; only shipped when the rewrite changes the graph.
- "onnx-bf16": the same rewritten graph (the same file as onnx-fp32-rw when that ships) to run with OpenVINO's
  bf16 hint, its parity measured through OpenVINO.
- "openvino-int8": an NNCF-quantized OpenVINO IR of the rewritten graph (ganrt.export.openvino), with a
  small-batch graph when it draws exactly the main graph's images.
Every ONNX/IR entry records ``"rewritten"`` and, when true, ``made_by.rewrite``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganrt.artifacts import ArtifactRow
from ganrt.bundle import WEIGHTS, WEIGHTS_ARTIFACT, Staged, onnx_file_name
from ganrt.export import graph as G
from ganrt.export.verify import Reference, Tolerance, Verification, verify_onnx
from ganrt.spec import GeneratorSpec

# openvino-int8-small (the single-form rewrite) serves batches up to this: on the demo generator (AVX-512 CPU,
# int8) it ran 0.83/0.63/0.54x onnxruntime fp32 at batch 1/2/3 against 1.02/0.68/0.56x for the main graph, and
# the two tied at batch 4 (main graph faster from 6)
SMALL_BATCH_MAX = 3


@dataclass
class Job:
    """What every builder gets: the generator, the staging directory, the options, the torch reference of the
    artifacts' own checks, and what earlier rows made."""

    module: nn.Module  # the generator as the graph sees it (ganrt.export.graph.GraphModule): the reference
    generator: nn.Module  # the module whose weights are shipped
    spec: GeneratorSpec
    stage: Path
    options: Any  # ganrt.export.pipeline.ExportOptions, checked
    source: dict[str, Any]
    reference: Reference  # the torch fp32 reference at the artifacts' own check batches
    log: Callable[[str], None]
    graphs: dict[str, Path] = field(default_factory=dict)  # graphs with the raw output: "fp32", "fp32-rw", ...
    made_by: dict[str, Any] = field(default_factory=dict)  # how the fp32 graph was made (every graph inherits it)
    staged: list[Staged] = field(default_factory=list)  # what the rows before this one built
    not_built: dict[str, str] = field(default_factory=dict)  # asked for, not buildable here: {artifact: why}
    _rewrite: tuple[Path, Any] | None = None

    def tolerance(self, row: ArtifactRow) -> Tolerance:
        return self.options.tolerances[row.tolerance]

    def rewritten(self) -> tuple[Path, Any]:
        """(the fp32 graph with its ConvTransposes rewritten, form "auto", or the graph as it is when there is
        nothing to rewrite; the rewrite report), made once."""
        if self._rewrite is None:
            import onnx

            from ganrt.export.rewrite import rewrite_conv_transpose

            full = onnx.load(str(self.graphs["fp32"]))
            rewritten, report = rewrite_conv_transpose(full, form="auto")
            self.log(f"rewriting ConvTranspose for CPU backends: {len(report.rewritten)} rewritten, "
                     f"{len(report.left)} left" + "".join(f"\n  left {r['node']}: {r['reason']}" for r in report.left))
            path = self.stage / "full.fp32.rw.onnx"
            if report.changed:
                G.check_model(rewritten, "the rewritten fp32 graph")
                onnx.save(rewritten, str(path))
            else:
                shutil.copyfile(self.graphs["fp32"], path)  # nothing to rewrite: bf16/int8 start from the graph as is
            self._rewrite = (path, report)
        return self._rewrite

    def rw_made_by(self) -> dict[str, Any]:
        path, report = self.rewritten()
        return {**self.made_by, "rewrite": report.to_dict()} if report.changed else dict(self.made_by)


def _entry_extra(v: Verification) -> dict[str, Any]:
    return {"parity": v.parity, "passed": v.passed, "tolerance": v.tolerance, "failures": v.failures}


def _logged(job: Job, v: Verification) -> Verification:
    job.log(("  passed: " if v.passed else "  FAILED: ") + v.summary())
    return v


def _ship_onnx(job: Job, row: ArtifactRow, full: Path, made_by: dict[str, Any], *, rewritten: bool,
               file: str | None = None) -> list[Staged]:
    """Check the graph at ``full`` (with its raw output) on onnxruntime, ship it without the raw output."""
    import onnx

    job.log(f"verifying {row.name} against torch fp32 (onnxruntime CPU, batch "
            f"{', '.join(map(str, job.reference.batches))})")
    v = _logged(job, verify_onnx(full, job.reference, job.spec, variant=row.name, tolerance=job.tolerance(row)))
    file = file or onnx_file_name(row.precision, rewritten=rewritten)
    onnx.save(G.drop_output(onnx.load(str(full))), str(job.stage / file))
    return [Staged(row.name, job.stage / file, {"file": file, "kind": "onnx", "precision": row.precision,
                                                "made_by": made_by, "rewritten": rewritten, **_entry_extra(v)})]


def weights(job: Job, row: ArtifactRow) -> list[Staged]:
    """The reference weights (generator.safetensors): what the torch backend rebuilds the generator from."""
    from ganrt.export.torch_weights import write_weights

    write_weights(job.stage / WEIGHTS, job.generator, job.spec, job.source)
    return [Staged(WEIGHTS_ARTIFACT, job.stage / WEIGHTS, {
        "file": WEIGHTS, "kind": "weights", "precision": "fp32",
        "made_by": {"format": "ganrt.checkpoint", "torch": torch.__version__}})]


def onnx_fp32(job: Job, row: ArtifactRow) -> list[Staged]:
    """torch -> ONNX (dynamo, else TorchScript), simplified by onnxslim: the graph every other one starts from."""
    import onnx
    import onnxruntime

    opts = job.options
    job.log(f"exporting to ONNX (opset {opts.opset}, exporter {opts.exporter})")
    raw_path = job.stage / "export.raw.onnx"
    made_by = G.export_onnx(job.module, job.spec, raw_path, opset=opts.opset, exporter=opts.exporter, log=job.log)
    full, slim_info = G.simplify(onnx.load(str(raw_path)))
    G.name_batch_axis(full)
    job.log(f"  onnxslim: {slim_info['nodes_before']} -> {slim_info['nodes_after']} nodes")
    G.check_model(full, "the fp32 graph")
    job.made_by = {**made_by, **G.onnx_versions(), "onnxruntime": onnxruntime.__version__, "simplify": slim_info}
    job.graphs["fp32"] = job.stage / "full.fp32.onnx"
    onnx.save(full, str(job.graphs["fp32"]))
    raw_path.unlink()
    return _ship_onnx(job, row, job.graphs["fp32"], dict(job.made_by), rewritten=False)


def onnx_fp16(job: Job, row: ArtifactRow) -> list[Staged]:
    """Mixed precision: sensitive nodes kept in fp32 (ganrt.export.fp16)."""
    import onnx

    from ganrt.export.fp16 import convert_fp16

    job.log("converting to fp16 (sensitive nodes kept fp32)")
    model16, info = convert_fp16(onnx.load(str(job.graphs["fp32"])), job.spec, safe_max=job.options.fp16_safe_max)
    G.check_model(model16, "the fp16 graph")
    job.graphs["fp16"] = job.stage / "full.fp16.onnx"
    onnx.save(model16, str(job.graphs["fp16"]))
    return _ship_onnx(job, row, job.graphs["fp16"], {**job.made_by, **info}, rewritten=False)


def onnx_int8(job: Job, row: ArtifactRow) -> list[Staged]:
    """Symmetric QDQ (TensorRT-consumable), calibrated on sampled latents (ganrt.export.int8)."""
    import onnx

    from ganrt.export.int8 import quantize_int8

    opts = job.options
    job.log(f"quantizing to int8 (QDQ, symmetric, calibration {opts.calibration_size} latents)")
    job.graphs["int8"] = job.stage / "full.int8.onnx"
    op_types = None if opts.int8_op_types is None else list(opts.int8_op_types)
    info = quantize_int8(job.graphs["fp32"], job.graphs["int8"], job.spec, op_types=op_types,
                         calibration_size=opts.calibration_size, calibration=opts.int8_calibration, work_dir=job.stage)
    G.check_model(onnx.load(str(job.graphs["int8"])), "the int8 graph")
    return _ship_onnx(job, row, job.graphs["int8"], {**job.made_by, **info}, rewritten=False)


def onnx_fp32_rw(job: Job, row: ArtifactRow) -> list[Staged]:
    """The rewritten fp32 graph, when the rewrite changes anything."""
    path, report = job.rewritten()
    if not report.changed:
        job.log("  no ConvTranspose the rewrite can express: no onnx-fp32-rw")
        return []
    return _ship_onnx(job, row, path, job.rw_made_by(), rewritten=True)


def onnx_bf16(job: Job, row: ArtifactRow) -> list[Staged]:
    """The (rewritten) fp32 graph under OpenVINO's bf16 hint: its parity measured through OpenVINO."""
    import onnx

    from ganrt.export.openvino import bf16_hardware, verify_openvino

    path, report = job.rewritten()
    hardware = bf16_hardware()
    job.log(f"verifying {row.name} (the {'rewritten ' if report.changed else ''}fp32 graph, OpenVINO bf16 hint) "
            "against torch fp32" + ("" if hardware else ": this CPU has no bf16 support, OpenVINO runs it in f32 here "
                                    "(bf16_hardware false in the manifest); re-verify on a bf16 CPU"))
    v = _logged(job, verify_openvino(path, job.reference, job.spec, variant=row.name, tolerance=job.tolerance(row),
                                     precision="bf16"))
    v.parity["bf16_hardware"] = hardware
    # the same bytes as onnx-fp32-rw: share its file when that ships, rather than store the weights twice
    shared = next((s for s in job.staged if s.name == "onnx-fp32-rw"), None)
    if shared is not None:
        file, shipped = shared.entry["file"], shared.path
    else:
        file = onnx_file_name("bf16")
        shipped = job.stage / file
        onnx.save(G.drop_output(onnx.load(str(path))), str(shipped))
    return [Staged(row.name, shipped, {
        "file": file, "kind": "onnx", "precision": "bf16",
        "made_by": {**job.rw_made_by(), "graph": "fp32 weights and arithmetic; bf16 is the OpenVINO inference "
                    "precision hint"},
        "rewritten": report.changed, "runtime": "openvino", "inference_hint": "bf16", "bf16_hardware": hardware,
        **_entry_extra(v)})]


def openvino_int8(job: Job, row: ArtifactRow) -> list[Staged]:
    """"openvino-int8" (and its small-batch graph "openvino-int8-small"): NNCF-quantized OpenVINO IRs of the
    rewritten graph and of its single-form rewrite (:func:`openvino_int8_graphs`)."""
    import onnx

    from ganrt.export.rewrite import rewrite_conv_transpose

    rw_full, report = job.rewritten()
    small_full = None
    if report.changed:
        small, small_report = rewrite_conv_transpose(onnx.load(str(job.graphs["fp32"])), form="single")
        if [r["into"] for r in small_report.rewritten] != [r["into"] for r in report.rewritten]:
            small_full = (job.stage / "full.fp32.rw-single.onnx", small_report.to_dict())
            G.check_model(small, "the single-form rewritten fp32 graph")
            onnx.save(small, str(small_full[0]))
    return openvino_int8_graphs(job, row, rw_full, small_full, made_by=job.rw_made_by(), rewritten=report.changed)


def openvino_int8_graphs(job: Job, row: ArtifactRow, rw_full: Path, small_full: tuple[Path, dict] | None, *,
                         made_by: dict[str, Any], rewritten: bool) -> list[Staged]:
    """The quantization policy. Every weighted layer is quantized; when that fails the int8 tolerance, the first
    one (the matrix product on the latent) is kept in fp32 and the graph quantized again. ``small_full`` (the
    single-form rewrite's path and report) is quantized the same way for the backend to run at batches up to
    SMALL_BATCH_MAX (fewer, larger convolutions: less per-node overhead where compute is small). It ships only
    when it passes and draws exactly the main graph's images on every checked batch (int8 arithmetic is exact,
    so it does when the calibration gives both graphs the same scales): a seed's image must not depend on the
    batch it is drawn in. Otherwise it is left out, with the reason in the log; it never fails the export.
    """
    from ganrt.export.openvino import quantize_int8, save_ir, verify_openvino, without_raw_output

    tolerance, size = job.tolerance(row), job.options.openvino_calibration_size
    what = "the rewritten graph" if rewritten else "the graph"
    job.log(f"quantizing {what} to OpenVINO int8 (NNCF, calibration {size} latents)")

    def verify(model, name):
        return verify_openvino(model, job.reference, job.spec, variant=name, tolerance=tolerance, precision="int8")

    quantized, info = quantize_int8(rw_full, job.spec, calibration_size=size, keep_first=False)
    v = verify(quantized, row.name)
    keep_first = not v.passed
    if keep_first:
        job.log(f"  every layer in int8 failed ({v.summary()}); quantizing again with the first layer in fp32")
        quantized, info = quantize_int8(rw_full, job.spec, calibration_size=size, keep_first=True)
        v = verify(quantized, row.name)
    _logged(job, v)
    graphs = [(row.name, quantized, {**made_by, **info}, v)]
    if small_full is not None and v.passed:
        small_path, small_report = small_full
        small, small_info = quantize_int8(small_path, job.spec, calibration_size=size, keep_first=keep_first)
        sv = verify(small, f"{row.name}-small")
        same = bool(np.array_equal(sv.images, v.images))
        sv.parity["same_images_as_openvino_int8"] = same
        if sv.passed and same:
            job.log(f"  {row.name}-small (single-form rewrite, batches 1-{SMALL_BATCH_MAX}): passed, the same images "
                    f"as {row.name}")
            graphs.append((f"{row.name}-small", small, {**made_by, **small_info, "rewrite": small_report}, sv))
        else:
            why = f"its images differ from {row.name}'s" if sv.passed else f"it failed parity ({sv.summary()})"
            job.log(f"  no small-batch graph: {why}; every batch runs {row.name}")

    staged = []
    for name, model, by, ver in graphs:
        stem = "model.int8" if name == row.name else "model.int8.small"
        xml, bin_ = save_ir(without_raw_output(model), job.stage / "openvino" / f"{stem}.xml")
        entry = {"file": f"openvino/{stem}.xml", "kind": "openvino-ir", "precision": "int8", "made_by": by,
                 "rewritten": rewritten, "runtime": "openvino", "weights_artifact": f"{name}-bin",
                 **_entry_extra(ver)}
        if name == row.name and len(graphs) > 1:
            entry["small_batch_graph"] = {"artifact": f"{row.name}-small", "max_batch": SMALL_BATCH_MAX}
        if name != row.name:
            entry["small_batch_of"] = row.name
        staged.append(Staged(name, xml, entry))
        staged.append(Staged(f"{name}-bin", bin_, {"file": f"openvino/{stem}.bin", "kind": "other",
                                                   "precision": None, "made_by": {"weights_of": name}}))
    return staged


def torch_weights(job: Job, row: ArtifactRow) -> list[Staged]:
    """The reference weights cast to the row's precision, for the torch CUDA variants (ganrt.export.torch_weights)."""
    from ganrt.export.torch_weights import build_torch_weights

    staged, _ = build_torch_weights(job.module, job.generator, job.spec, job.stage, precisions=(row.precision,),
                                    reference=job.reference, tolerances=job.options.tolerances, source=job.source,
                                    log=job.log)
    return staged


def engine(job: Job, row: ArtifactRow) -> list[Staged]:
    """A strongly typed TensorRT engine from the plain onnx graph of the row's precision, when that passed. The
    graph is linted for TensorRT first (ganrt.export.tensorrt_lint); on a machine without TensorRT or a GPU that
    verdict is all there is, and the engine is recorded in ``job.not_built``."""
    from ganrt.export.tensorrt import build_engine, lint_engine_sources, tensorrt_missing, verify_engine

    graph = next((s for s in job.staged if s.name == f"onnx-{row.precision}"), None)
    if graph is None or not graph.entry.get("passed"):
        job.log(f"  no TensorRT {row.precision} engine: onnx-{row.precision} did not pass its check")
        return []
    lint = lint_engine_sources({graph.name: graph.path}, job.log)
    missing = tensorrt_missing()
    if missing:
        job.not_built[row.name] = f"{missing}. {lint}; build the engines on the target GPU with --tensorrt"
        return []
    cache = job.stage / "timing.cache"
    job.log(f"building a TensorRT engine from {graph.name}")
    engine_path, entry = build_engine(graph.path, job.stage, precision=row.precision, max_batch=job.options.max_batch,
                                      workspace_mb=job.options.trt_workspace_mb, timing_cache=cache,
                                      hardware_compatibility=job.options.trt_hardware_compatibility, log=job.log)
    check = verify_engine(engine_path, job.reference, job.spec, variant=entry["name"], tolerance=job.tolerance(row))
    entry.update(check)
    p = check["parity"]
    job.log(f"  {entry['name']}: max |diff| {p['max_abs_diff']:.0f} levels, PSNR {p['psnr_db']} dB"
            + ("" if check["passed"] else f" FAILED ({', '.join(check['failures'])})"))
    staged = [Staged(entry.pop("name"), engine_path, entry)]
    if cache.is_file() and not any(s.name == "timing-cache" for s in job.staged):
        staged.append(Staged("timing-cache", cache, {"file": "timing.cache", "kind": "timing_cache",
                                                     "precision": None,
                                                     "made_by": {"tensorrt": entry["made_by"]["tensorrt"]}}))
    return staged
