"""Verify what runs: every runtime variant of a staged bundle, through the runtime's own backend code.

The runtime runs *variants* (an artifact on a backend row, at a precision, on a device, with options), each at a
bounded set of batch buckets (1, 2, 4, ..., max_batch, plus a small-batch graph's sizes). For every variant
``ganrt.runtime`` could select here (``selection.runnable`` on the bundle being exported), :func:`verify_variants`
loads the backend row's own runner on the staged files, runs it at each of its buckets and compares the images
with the torch fp32 reference under the variant's precision tolerance. What it records per variant goes into the
manifest's "variants" section (:meth:`VariantCheck.record`); a variant that failed is never offered.

Two kinds of variant are not run here, and say why (``why_not``): those that compile for minutes at load
(torch.compile, onnxruntime's TensorRT provider), and, naturally, those this machine cannot run (a GPU's).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ganrt.bundle import Bundle
from ganrt.errors import GanrtError
from ganrt.export.verify import References, Tolerance, compare_outputs
from ganrt.parity import json_safe

# variant options whose load compiles for minutes: recorded as not verified at export
SLOW_TO_LOAD = {"compile": "torch.compile compiles each batch shape for minutes",
                "trtep": "onnxruntime's TensorRT provider builds its engines at load, for minutes"}


@dataclass
class VariantCheck:
    """What export found for one runtime variant: passed (True/False), or None with ``why_not``."""

    variant: str
    artifact: str
    backend: str
    precision: str
    device: str
    passed: bool | None
    failures: list[str] = field(default_factory=list)
    why_not: str = ""
    parity: dict[str, Any] | None = None
    tolerance: dict[str, Any] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    note: str = ""
    verified_on: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The manifest's record of this variant (ganrt.bundle VARIANT_SCHEMA)."""
        out = {k: v for k, v in asdict(self).items() if v not in ("", [], {}, None) or k == "passed"}
        out.pop("variant")
        return out

    def summary(self) -> str:
        if self.passed is None:
            return f"{self.variant}: not verified here ({self.why_not})"
        p = self.parity or {}
        psnr = p.get("psnr_db")
        psnr = f"{psnr:.1f} dB" if isinstance(psnr, (int, float)) else f"{psnr} dB"
        figures = f"max |diff| {p['max_abs_diff']:.0f} levels, PSNR {psnr}" if "max_abs_diff" in p else "no images"
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        return f"{self.variant} ({self.artifact}, batch {','.join(map(str, self.batch_sizes))}): {figures}, {verdict}"


def machine() -> dict[str, Any]:
    """Where the variants were verified: this machine's CPU and GPU, and the software that ran them."""
    from ganrt import __version__
    from ganrt.runtime.machine import cpu_name, cuda_device

    dev = cuda_device()
    return {"cpu": cpu_name(), "gpu": None if dev is None else dev[0], "ganrt": __version__,
            "python": platform.python_version()}


def verify_variants(bundle: Bundle, references: References, tolerances: dict[str, Tolerance], *,
                    available, threads: int, kept: dict[str, dict] | None = None,
                    done: set[tuple[str, str]] = frozenset(),
                    log: Callable[[str], None] = lambda s: None) -> list[VariantCheck]:
    """Run every variant ``ganrt.runtime`` could select here for ``bundle`` plus the ``kept`` artifacts, whose
    artifact is ``bundle``'s and whose (variant, artifact) is not in ``done``, at every batch bucket through its
    backend row's runner; one :class:`VariantCheck` per variant.

    ``bundle``: the bundle as export staged it (artifacts' paths inside the staging directory; a user's module
    counts as trusted: the caller of export gave it). ``kept``: the artifacts a re-export keeps from the bundle
    as it was (they decide which artifact a variant runs; their variants keep their records).
    ``available``: ganrt.runtime.machine.Availability here.
    """
    from ganrt.runtime.selection import runnable

    where = machine()
    manifest = {**bundle.to_dict(), "artifacts": {**(kept or {}), **bundle.artifacts}}
    checks = []
    for choice in runnable(manifest, available, trust_code=True).choices:
        if choice.artifact not in bundle.artifacts or (choice.variant, choice.artifact) in done:
            continue
        check = VariantCheck(choice.variant, choice.artifact, choice.backend, choice.precision, choice.device, None)
        slow = [why for option, why in SLOW_TO_LOAD.items() if option in choice.options]
        entry = bundle.artifacts[choice.artifact]
        if slow:
            check.why_not = slow[0]
        elif entry.get("passed") is False:
            check.passed = False
            check.failures = [f"its artifact {choice.artifact} failed its own check: "
                              + "; ".join(entry.get("failures") or ["parity"])]
        else:
            _run(check, bundle, choice, references, tolerances[choice.precision], threads)
            check.verified_on = where
        log(("  " if check.passed is not False else "  FAILED ") + check.summary())
        checks.append(check)
    return checks


def _run(check: VariantCheck, bundle: Bundle, choice, references: References, tolerance: Tolerance,
         threads: int) -> None:
    """Load ``choice`` with its backend row's runner, run it at each of its batch buckets, compare."""
    from ganrt.runtime.backends import BACKENDS
    from ganrt.runtime.base import LoadOptions, first_line

    options = LoadOptions(threads=threads, concurrency=1, trust_code=True)
    try:
        with warnings.catch_warnings(record=True):  # a fallback the runner takes is kept as its note
            warnings.simplefilter("always")
            runner = BACKENDS[choice.backend].runner_class()(bundle, choice, options)
    except Exception as e:  # the library refused the artifact: that is this variant's failure
        check.passed, check.failures = False, [f"could not be loaded: {first_line(e)}"]
        return
    check.note = getattr(runner, "note", "")
    check.batch_sizes = list(runner.buckets)
    reference = references.at(runner.buckets)

    def run(feeds: dict[str, Any]) -> dict[str, Any]:
        return {"images": runner.infer(feeds["z"], feeds.get("labels"), feeds.get("truncation"))}

    try:
        with runner:
            v = compare_outputs(run, reference, bundle.spec, variant=choice.variant, tolerance=tolerance,
                                runner=choice.variant)
    except GanrtError as e:  # a batch the backend fails on (BackendError), a wrong shape (BundleError)
        check.passed, check.failures = False, [str(e)]
        return
    except Exception as e:
        check.passed, check.failures = False, [f"{type(e).__name__}: {first_line(e)}"]
        return
    check.passed, check.failures, check.tolerance = v.passed, v.failures, v.tolerance
    check.parity = json_safe({k: v.parity[k] for k in ("max_abs_diff", "mean_abs_diff", "psnr_db", "frac_gt_1",
                                                       "per_batch") if k in v.parity})



def variant_table(records: dict[str, dict[str, Any]], not_shipped: dict[str, dict[str, Any]]) -> list[str]:
    """The manifest's variant records (and what was left out) as table lines: verdict, figures, where or why."""
    lines = []
    for name, v in sorted(records.items(), key=lambda item: (item[1].get("passed") is not False, item[0])):
        p = v.get("parity") or {}
        verdict = {True: "passed", False: "FAILED", None: "-"}[v.get("passed")]
        where = (v.get("verified_on") or {}).get("gpu") or (v.get("verified_on") or {}).get("cpu") or ""
        detail = ("; ".join(v.get("failures") or []) if v.get("passed") is False else
                  f"not run: {v['why_not']}" if v.get("why_not") else
                  f"batch {','.join(map(str, v.get('batch_sizes') or []))} on {where}")
        maxd = f"{p['max_abs_diff']:.0f}" if isinstance(p.get("max_abs_diff"), (int, float)) else ""
        psnr = f"{p['psnr_db']:.1f}" if isinstance(p.get("psnr_db"), (int, float)) else str(p.get("psnr_db", ""))
        lines.append(f"  {name:<28} {v['artifact']:<20} {verdict:<7} {maxd:>4} {psnr:>7}  {detail}"
                     + (f" ({v['note']})" if v.get("note") else ""))
    for name, why in sorted(not_shipped.items()):
        lines.append(f"  not shipped: {name} ({why.get('precision')}): "
                     + "; ".join(why.get("failures") or ["its runtime variants failed"]))
    return lines
