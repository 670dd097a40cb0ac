"""export(): a generator -> a verified bundle, built and verified row by row of the table of artifacts.

The rows (ganrt.artifacts) say what each artifact is and how it is built (ganrt.export.builders): the reference
weights, the ONNX graphs (fp32, fp16, int8), the CPU fast path (the ConvTranspose-rewritten fp32 graph, its
bf16 form for OpenVINO, an NNCF int8 OpenVINO IR), torch weights cast for the GPU, TensorRT engines. Each row's
builder checks its artifact against the torch fp32 reference (NaN/Inf in the float output included); then every
runtime variant of what was built (ganrt.export.variants) runs through the runtime's own backend code at every
batch bucket, and the manifest records each one's verdict.

Partial success is a result: an artifact whose own check failed, or whose every variant here failed, is left out
(recorded in the manifest's "not_shipped" with its figures), the ones that passed are written, and a failed
variant is recorded and never offered; :class:`ExportResult` lists both (the CLI prints it as a table and exits
1). ``strict`` keeps all-or-nothing: any failure writes nothing. An export where nothing but the reference
weights passed writes nothing either.

Everything is built and verified in a staging directory beside the bundle, under the bundle's writer lock
(ganrt.bundle.BundleWriter: one export at a time); only then are the files moved in, under names the current
manifest does not use, and the manifest replaced, last. A failed or killed export leaves the bundle as it
was; a full disk is one line naming where and about how much the export needs. Re-exporting into an existing
bundle of the same generator replaces only the artifacts it rebuilds (the policy: ganrt.bundle.plan_merge);
each artifact it drops is logged.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganrt.artifacts import ARTIFACTS, row_of
from ganrt.bundle import WEIGHTS_ARTIFACT, Bundle, BundleWriter, Staged, plan_merge
from ganrt.errors import ConfigError, ExportError, ParityError, SpecError
from ganrt.export import graph as G
from ganrt.export.builders import SMALL_BATCH_MAX, Job
from ganrt.export.variants import VariantCheck, variant_table, verify_variants
from ganrt.export.verify import TOLERANCES, References, Tolerance, verified_batches
from ganrt.fileio import sha256_file
from ganrt.postprocess import OUTPUT_FORMATS
from ganrt.spec import GeneratorSpec

__all__ = ["EXPORT_PRECISIONS", "ExportOptions", "ExportResult", "export", "export_checkpoint", "SMALL_BATCH_MAX"]

EXPORT_PRECISIONS = ("fp32", "fp16", "int8", "bf16")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to build, and how. ``ExportOptions(precisions=("fp32", "fp16"), max_batch=16)``.

    precisions: any of fp32, fp16, int8, bf16 (fp32 is always built: the others derive from it). bf16 is the
        ConvTranspose-rewritten fp32 graph for OpenVINO's bf16 hint ("onnx-bf16"; needs OpenVINO).
    max_batch: the largest batch the bundle serves; every runtime variant is verified at every batch bucket up
        to it (1, 2, 4, ..., max_batch).
    cpu_rewrite: also ship "onnx-fp32-rw" (the rewritten fp32 graph) when the rewrite changes the graph.
    openvino_int8: also ship "openvino-int8", an NNCF int8 OpenVINO IR of the rewritten graph (needs OpenVINO
        and NNCF), calibrated on ``openvino_calibration_size`` latents; int8 tolerance.
    tensorrt: also build TensorRT engines for each exported precision (needs a GPU and TensorRT; without them
        the graphs are linted against TensorRT's operator table, the rest is written, and BackendUnavailable
        says so). trt_hardware_compatibility: "none" (the plan runs on the GPU model that built it) or
        "same-cc" (every GPU of its compute capability).
    artifacts: further rows of the table of artifacts (ganrt.artifacts) to build, by name.
    verify_batch_cap: the largest batch of each artifact's own check (batches 1, 3 and min(max_batch, cap)).
    strict: all or nothing: any artifact or variant that fails writes nothing (ParityError). Otherwise what
        passed is written, the failures recorded (``ExportResult``).
    allow_failed_parity: keep what failed in the bundle too, marked ``passed=false`` (for investigations).
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
    strict: bool = False
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
    artifacts: tuple[str, ...] = ()
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
        unknown = [a for a in self.artifacts if a not in ARTIFACTS]
        if unknown:
            raise ConfigError(f"artifacts: {unknown[0]!r} is not a row of the table of artifacts; choose from "
                              f"{', '.join(ARTIFACTS)}")
        from ganrt.export.torch_weights import check_precisions

        return replace(self, precisions=tuple(precisions), tolerances={**TOLERANCES, **(self.tolerances or {})},
                       torch_precisions=check_precisions(self.torch_precisions))


@dataclass
class ExportResult:
    """What an export wrote and what it left out.

    ``bundle``: the bundle as written. ``variants``: every runtime variant export ran here at every batch bucket
    (``passed`` True or False, with its figures) and those it could not run here (``passed`` None, ``why_not``).
    ``not_shipped``: the artifacts built and left out, {name: {"kind", "precision", "parity", "failures"}}.
    ``not_built``: the artifacts asked for that this machine cannot build (TensorRT engines without TensorRT or
    a GPU), with why; ``export`` then raises BackendUnavailable once the rest is written.
    """

    bundle: Bundle
    variants: list[VariantCheck] = field(default_factory=list)
    not_shipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_built: dict[str, str] = field(default_factory=dict)  # asked for, not buildable here: {artifact: why}

    @property
    def passed(self) -> list[str]:
        return [v.variant for v in self.variants if v.passed]

    @property
    def failed(self) -> list[str]:
        return [v.variant for v in self.variants if v.passed is False]

    @property
    def ok(self) -> bool:
        """Everything asked for was built and every variant that ran here passed."""
        return not self.failed and not self.not_shipped

    def table(self) -> str:
        """The variants as the manifest records them (failed first) and what was left out, as the CLI prints it."""
        return "\n".join(variant_table(self.bundle.variants, self.not_shipped))


def _quiet(_: str) -> None:
    pass


def _require_libraries(opts: ExportOptions) -> None:
    """Fail before any work when an option needs a library or device this machine lacks (TensorRT excepted:
    without it the graphs are linted for it, see ganrt.export.builders.engine)."""
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


def export(generator: nn.Module, out_dir: str | os.PathLike, *, spec: GeneratorSpec,
           options: ExportOptions | None = None, source: dict[str, Any] | None = None,
           progress: Progress | None = None) -> ExportResult:
    """Export ``generator`` (any ``nn.Module`` taking (z[, labels][, truncation]) and returning images in
    ``spec.output_range``) to a verified bundle in ``out_dir``; returns the :class:`ExportResult` (its
    ``bundle``, the variants verified and what failed).

    ``spec``: a family's spec, or ``GeneratorSpec(latent_dim=..., num_classes=..., channels=..., height=...,
    width=...)`` for your own module (called with exactly the inputs it takes, as in the graph; see
    ganrt.spec for the ways it may take them).
    ``options``: :class:`ExportOptions` (default: fp32 + the CPU fast path's rewritten graph, max batch 64).
    Raises ParityError (nothing written) when ``options.strict`` and anything failed, or when nothing but the
    reference weights passed.
    """
    log = progress or _quiet
    if not isinstance(spec, GeneratorSpec):
        raise SpecError(f"spec must be a ganrt.spec.GeneratorSpec, got {type(spec).__name__}")
    opts = (options or ExportOptions()).checked()
    _require_libraries(opts)
    source = dict(source or {"kind": "module", "class": f"{type(generator).__module__}.{type(generator).__qualname__}"})
    if not isinstance(generator, nn.Module):
        raise SpecError(f"a generator must be a torch.nn.Module, got {type(generator).__name__}")
    writer = BundleWriter(out_dir, spec, wait=opts.wait_for_lock, log=log)
    try:
        with writer:  # lock, destination checked
            result = _export(writer, generator, spec, opts, source, log)
    except Exception as e:
        if not _out_of_space(e):
            raise
        raise ExportError(_disk_full_message(e, writer.path, generator, opts)) from None
    log(f"bundle written: {result.bundle.path}")
    if result.not_built:
        from ganrt.errors import BackendUnavailable

        raise BackendUnavailable(f"{result.bundle.path} was written without TensorRT engines: "
                                 + "; ".join(dict.fromkeys(result.not_built.values())))
    return result


def _export(writer: BundleWriter, generator: nn.Module, spec: GeneratorSpec, opts: ExportOptions,
            source: dict[str, Any], log: Progress) -> ExportResult:
    _check_weights_rebuild(generator, spec)
    module = G.GraphModule(G.prepare_generator(generator), spec, opts.output_format).eval()
    log(f"checking the generator against its spec ({spec.arch}, z {spec.latent_dim}, "
        f"images {spec.channels}x{spec.height}x{spec.width})")
    G.check_against_spec(module, spec, seeds=[0, 1, 2])
    graph = G.graph_description(spec, output_format=opts.output_format, opset=opts.opset, max_batch=opts.max_batch)
    current = writer.current()
    references = References(module, spec)
    batches = verified_batches(opts.max_batch, opts.verify_batch_cap)
    log(f"computing the torch reference at batch {', '.join(map(str, batches))}")
    job = Job(module=module, generator=generator, spec=spec, stage=writer.stage, options=opts, source=source,
              reference=references.at(batches), log=log)
    if opts.tensorrt and current is not None and "timing-cache" in current.artifacts:
        shutil.copyfile(current.artifact_path("timing-cache"), writer.stage / "timing.cache")  # never written in place
    for row in ARTIFACTS.values():
        if row.asked(opts):
            module_name, function = row.build.split(":")
            job.staged += getattr(importlib.import_module(module_name), function)(job, row)

    shipping, checks = _verify_and_ship(job, graph, current, references, log)
    dropped = {s.name: s.entry for s in job.staged if s.name not in shipping and row_of(s.name, s.entry)}
    failed = [c for c in checks if c.passed is False]
    if opts.strict and (failed or dropped):
        raise ParityError("strict export: nothing was written to the bundle: " + _failures(failed, dropped)
                          + ". Export without --strict to write what passed, or without the failing precision")
    if not any(c.passed and c.artifact != WEIGHTS_ARTIFACT for c in checks) and not opts.allow_failed_parity:
        raise ParityError("nothing but the reference weights passed, so nothing was written to the bundle: "
                          + (_failures(failed, dropped) or "no runtime variant could run here")
                          + ". Pass --allow-failed-parity (allow_failed_parity=True) to keep them marked "
                          "passed=false, or export other precisions")
    not_shipped = {n: {"kind": e.get("kind"), "precision": e.get("precision"), "parity": e.get("parity"),
                       "failures": e.get("failures") or _variant_failures(checks, n)} for n, e in dropped.items()}
    records = {}
    for c in sorted(checks, key=lambda c: c.artifact in shipping):  # a variant's record on a shipped artifact wins
        records[c.variant] = c.record()
    bundle = writer.commit(graph=graph, source=source, staged=list(shipping.values()), variants=records,
                           not_shipped=not_shipped)
    if failed or dropped:
        log(f"written WITHOUT what failed ({_failures(failed, dropped)}); the rest passed")
    return ExportResult(bundle=bundle, variants=checks, not_shipped=not_shipped, not_built=job.not_built)


def _verify_and_ship(job: Job, graph: dict[str, Any], current: Bundle | None, references: References,
                     log: Progress) -> tuple[dict[str, Staged], list[VariantCheck]]:
    """Verify every runtime variant of the staged artifacts; leave out each artifact whose own check failed or
    whose every variant here failed (with what came with it), and verify again what then runs another artifact.
    Returns ({name: Staged} to ship, every variant check)."""
    from ganrt.runtime.machine import Availability

    available = Availability.probe()
    kept = {}
    if current is not None:  # what this commit keeps of the old bundle: the variants that run it stay as recorded
        drop = plan_merge(current, graph, job.staged)
        rebuilt = {s.name for s in job.staged}
        kept = {n: a for n, a in current.artifacts.items() if n not in rebuilt and n not in drop}
    shipping = {s.name: s for s in job.staged}
    checks: dict[tuple[str, str], VariantCheck] = {}
    log(f"verifying every runtime variant here through its backend, at every batch bucket up to "
        f"{job.options.max_batch}")
    while True:
        staged = Bundle(path=job.stage, spec=job.spec, graph=graph,
                        artifacts={n: s.entry for n, s in shipping.items()})
        for c in verify_variants(staged, references, job.options.tolerances, available=available,
                                 threads=torch.get_num_threads(), kept=kept, done=set(checks), log=log):
            checks[(c.variant, c.artifact)] = c
        if job.options.allow_failed_parity:
            break
        out = [n for n, s in shipping.items() if row_of(n, s.entry) and not _ships(n, s.entry, checks.values())]
        if not out:
            break
        for name in out:
            log(f"  leaving {name} out: " + "; ".join(shipping[name].entry.get("failures")
                                                      or _variant_failures(checks.values(), name)))
        shipping = _without(shipping, set(out))
    return shipping, list(checks.values())


def _ships(name: str, entry: dict[str, Any], checks) -> bool:
    """Whether an artifact ships: its own check did not fail, and a variant of it passed here (or none ran)."""
    ran = [c.passed for c in checks if c.artifact == name and c.passed is not None]
    return entry.get("passed") is not False and (not ran or any(ran))


def _without(shipping: dict[str, Staged], out: set[str]) -> dict[str, Staged]:
    """``shipping`` without the artifacts ``out`` and what comes with them (an IR's weights, a small-batch graph,
    the timing cache without an engine)."""
    left = {n: s for n, s in shipping.items() if n not in out}
    engines = any(s.entry.get("kind") == "engine" for s in left.values())
    for n, s in list(left.items()):
        e = s.entry
        if ((e.get("made_by") or {}).get("weights_of") in out or e.get("small_batch_of") in out
                or (e.get("kind") == "timing_cache" and not engines)):
            del left[n]
    for s in left.values():
        if (s.entry.get("small_batch_graph") or {}).get("artifact") in out:
            s.entry.pop("small_batch_graph")
    return left


def _variant_failures(checks, name: str) -> list[str]:
    return [f"{c.variant}: {'; '.join(c.failures)}" for c in checks if c.artifact == name and c.passed is False]


def _failures(failed: list[VariantCheck], dropped: dict[str, dict[str, Any]]) -> str:
    """What failed, in one line: each artifact whose own check failed, then each other variant that failed."""
    own = {n for n, e in dropped.items() if e.get("passed") is False}
    parts = [f"{n} failed its own check ({'; '.join(dropped[n]['failures'])})" for n in sorted(own)]
    parts += [f"{c.variant} failed ({'; '.join(c.failures)})" for c in failed if c.artifact not in own]
    return "; ".join(parts)


def _out_of_space(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a full disk or quota, as OSError or in a library's own words."""
    return any(isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT)
               or any(text in str(x) for text in ("No space left on device", "Disk quota exceeded", "StorageFull"))
               for x in _chain(e))


def _disk_full_message(e: BaseException, bundle: Path, generator: nn.Module, opts: ExportOptions) -> str:
    """One line: where the space ran out, how much is free there, about how much the export needs."""
    where = next((Path(x.filename).parent for x in _chain(e) if isinstance(x, OSError) and x.filename), bundle.parent)
    weights = sum(t.numel() * 4 for t in generator.state_dict().values() if t.is_floating_point())
    needs = weights * sum(row.footprint for row in ARTIFACTS.values() if row.asked(opts))
    try:
        free = shutil.disk_usage(bundle.parent).free
    except OSError:
        free = None
    return (f"no space left on the device of {where} while exporting: this export needs about {_mb(needs)} there "
            f"(its staging directory beside {bundle.name}, then the new files)"
            + (f", {_mb(free)} is free now" if free is not None else "")
            + f"; free some space or export to another --out. {bundle} was left as it was")


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def export_checkpoint(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      options: ExportOptions | None = None, ema: bool = True, trust_code: bool = False,
                      progress: Progress | None = None) -> ExportResult:
    """Export a ganrt checkpoint's generator (its EMA weights by default) with :class:`ExportOptions`; returns
    the :class:`ExportResult`.

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
