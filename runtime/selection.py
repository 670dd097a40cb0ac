"""Which backend runs a bundle here: a pure function of the manifest and of what this machine has.

``select(manifest, available, backend=..., precision=..., device=...)`` returns a ``Choice`` saying which
backend, precision, device and artifact to load and why. The variants come from the table of backends
(``ganrt.runtime.backends``: each row's ``variants()`` lists what it could run of this bundle here).
``backend="auto"`` picks, among the variants this machine can run whose parity passed:

1. by this machine's tuning record (``tuning``: ganrt.runtime.tuning.read_tuning for the machine key
   ``load`` runs with; written by ``ganrt bench``): the variant with the lowest median latency among those
   whose artifact passed *export* parity (lossy precisions such as int8 included; a bench gate never changes
   this), at the measured batch size closest to the ``batch_size`` hint (ties: the smaller batch; no hint:
   the smallest batch). When nothing measured at that batch can run here, the next closest measured batch
   decides. Bundles benched by an older ganrt have their timings in the manifest's "benchmarks" section
   instead: read the same way when recorded on this machine (same CPU and GPU strings), skipping the
   variants that section marks failed;
2. else by the default order, each variant's ``rank``: tensorrt > onnxruntime-cuda > openvino-bf16 (only
   when the CPU has bf16 and a bf16 artifact passed parity) > onnxruntime-cpu > openvino > torch.

A user's own module (spec "arch": "external") runs on torch only with ``trust_code=True`` (rebuilding it
imports the code its spec names) and never without a factory; its graphs run on every other backend.

A variant's verdict is the one export recorded for it in the manifest's "variants" section (it ran through
this backend's own code at every batch bucket; ganrt.export.variants) when that record is for the artifact the
variant runs here; else its artifact's parity (a variant export could not run, e.g. on a GPU it did not have).
A variant that failed is never auto's pick, and an explicit request prefers one that did not fail.

Without a requested precision a backend prefers the precision table's order for its device
(``ganrt.precisions.ranked``); a lossy precision (int8) is taken without being asked for only when the
benchmarks say it is fastest. Nothing here imports a backend's library.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from ganrt import artifacts, precisions
from ganrt.errors import BackendUnavailable, BundleError, ConfigError
from ganrt.runtime.backends import BACKENDS, ORT_PROVIDERS, BundleView, Choice, Missing, row
from ganrt.runtime.machine import Availability
from ganrt.runtime.tensorrt_backend import engine_mismatch, engine_target, trt_version_matches
from ganrt.runtime.tuning import tuning_table

__all__ = ["Choice", "select", "runnable", "here", "measured_timings", "benchmark_table", "batches_by_closeness",
           "check_batch_hint", "engine_mismatch", "engine_target", "trt_version_matches", "DEVICES", "ORT_PROVIDERS"]

DEVICES = ("cpu", "cuda")


@dataclass
class _Pool:
    """Every variant this machine could run from this bundle, in default order, and why others are not."""

    choices: list[Choice] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)


def runnable(manifest: dict[str, Any], available: Availability, trust_code: bool = False) -> _Pool:
    """Every variant of the bundle each backend row could run here, best default rank first, each with the
    verdict export recorded for it (:func:`record_of`), else its artifact's."""
    view = BundleView(manifest.get("artifacts") or {}, manifest.get("spec") or {}, trust_code)
    pool = _Pool()
    for backend in BACKENDS.values():
        choices, missing = backend.variants(view, available)
        pool.choices += choices
        pool.missing += missing
    for i, c in enumerate(pool.choices):
        record = record_of(manifest, c)
        if record is not None and record.get("passed") is not None:
            pool.choices[i] = c.but(passed=record["passed"])
    pool.choices.sort(key=_default_rank)
    return pool


def record_of(manifest: dict[str, Any], choice: Choice) -> dict[str, Any] | None:
    """What export recorded for this variant (its verdict, figures, where it ran), when it ran the artifact the
    variant runs here; else None."""
    record = (manifest.get("variants") or {}).get(choice.variant)
    return record if record is not None and record.get("artifact") == choice.artifact else None


def here(manifest: dict[str, Any], available: Availability, trust_code: bool = False) -> dict[str, Any]:
    """What this machine can run of the bundle: {"runnable": [variant, ...] in default order (those that did not
    fail), "failed": {variant: why} (never chosen by auto), "verified": {variant: where export verified it at
    every batch bucket, or why it did not}, "unavailable": {backend: why} (a backend with nothing to run here; an
    unusable library in its own words)."""
    pool = runnable(manifest, available, trust_code)
    running = {c.backend for c in pool.choices}
    unavailable = {name: why for name, why in available.problems.items() if name not in running}
    for m in pool.missing:
        if m.backend not in running and m.precision is None:
            unavailable.setdefault(m.backend, m.text)
    failed, verified = {}, {}
    for c in pool.choices:
        record = record_of(manifest, c) or {}
        if c.passed is False:
            failed[c.variant] = "; ".join(record.get("failures") or ()) or f"artifact {c.artifact} failed parity"
        verified[c.variant] = _where(record, c)
    return {"runnable": [c.variant for c in pool.choices if c.passed is not False], "failed": failed,
            "verified": verified, "unavailable": unavailable}


def _where(record: dict[str, Any], c: Choice) -> str:
    on = record.get("verified_on") or {}
    if on:
        batches = record.get("batch_sizes") or []
        machine = on.get("gpu") or on.get("cpu") or "?"
        return f"verified at export on {machine}, batch {', '.join(map(str, batches))}"
    if record.get("why_not"):
        return f"not verified at export: {record['why_not']}"
    return f"not verified at export (artifact {c.artifact}'s own check only)"


def _default_rank(choice: Choice) -> tuple:
    """Sort key of the default order; smaller is preferred."""
    return (choice.rank, precisions.rank(choice.precision, choice.device))


def _have(manifest: dict[str, Any]) -> list[str]:
    artifacts = manifest.get("artifacts") or {}
    return sorted({a.get("precision") for a in artifacts.values() if a.get("precision")}
                  | ({"fp32"} if "weights" in artifacts else set()))


def _check_request(manifest: dict[str, Any], backend: str, precision: str | None, device: str | None) -> None:
    # a backend that makes the precision at load time (torch casts its weights, OpenVINO's bf16 hint);
    # row(): ConfigError for an unknown backend
    casts = artifacts.casts(row(backend).name) if backend != "auto" else ()
    if device is not None and device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    if precision is not None and precision not in precisions.PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(precisions.NAMES)}")
    if precision is not None:
        have = _have(manifest)
        if precision not in have and precision not in casts:
            raise BundleError(f"the bundle has no {precision} artifact (it has: {', '.join(have) or 'nothing'}); "
                              f"export the bundle with that precision too, or ask for one it has")


def select(manifest: dict[str, Any], available: Availability, *, backend: str = "auto",
           precision: str | None = None, device: str | None = None, provider: str | None = None,
           variant: str | None = None, batch_size: int | None = None, compile: bool = False,
           cuda_graphs: bool | None = None, tuning: dict[str, Any] | None = None, trust_code: bool = False) -> Choice:
    """The variant to run, with ``reason`` saying why; clear errors when nothing fits.

    ``variant``: one variant by name ("onnxruntime-fp32-rw", "openvino-int8", ...), within the other filters.
    ``batch_size``: the typical request size; auto ranks variants by the benchmarks measured at the batch
    closest to it (None: at the smallest measured batch).
    ``compile`` / ``cuda_graphs``: torch's torch.compile and captured-graph variants (``cuda_graphs`` is a
    load option of the other GPU backends: it does not choose among their variants).
    ``tuning``: this machine's tuning record (ganrt.runtime.tuning.read_tuning), or None.
    ``trust_code``: a user's module may be rebuilt in torch (imports the code its spec names).
    """
    _check_request(manifest, backend, precision, device)
    batch_size = check_batch_hint(batch_size)
    if provider is not None and provider not in ORT_PROVIDERS:
        raise ConfigError(f"unknown onnxruntime provider {provider!r}; choose one of {', '.join(ORT_PROVIDERS)}")
    if compile and backend not in ("auto", "torch"):
        raise ConfigError(f"compile=True applies to the torch backend, but {backend} was asked for; "
                          "pass backend='torch' or drop compile")
    pool = runnable(manifest, available, trust_code)

    def fits(c: Choice) -> bool:
        if backend != "auto" and c.backend != backend:
            return False
        if precision is not None and c.precision != precision:
            return False
        if device is not None and c.device != device:
            return False
        if provider is not None and (c.backend != "onnxruntime" or c.provider != ORT_PROVIDERS[provider]):
            return False
        if variant is not None:
            return c.variant == variant
        if compile and "compile" not in c.options:  # torch.compile: torch's -compile variants only
            return False
        # torch's captured-graph variants when asked for (a load option of the other GPU backends)
        return c.backend != "torch" or cuda_graphs is None or ("cudagraph" in c.options) == cuda_graphs

    def plain(c: Choice) -> bool:
        """In the default order, torch runs eager (no channels_last) unless compile / CUDA graphs were asked for:
        its other forms are taken by name or when the benchmarks say they are fastest."""
        asked = {"cuda"} | ({"compile"} if compile else set()) | ({"cudagraph"} if cuda_graphs else set())
        return variant is not None or c.backend != "torch" or set(c.options) <= asked

    fitting = [c for c in pool.choices if fits(c)]
    candidates = [c for c in fitting if plain(c)]
    benchmarked = fitting
    if backend == "auto" and variant is None:
        benchmarked = [c for c in fitting if _auto_ok(c, precision, benchmarked=True)]
        candidates = [c for c in candidates if _auto_ok(c, precision)]
    if not candidates and not benchmarked:
        raise BackendUnavailable(_nothing_fits(manifest, available, backend, precision, device, pool, variant))

    if backend != "auto" or variant is not None:
        # the first in the default order that did not fail (and that auto could take), else the first
        best = min(candidates, key=lambda c: c.passed is False or c.auto is False)
        why = f"{variant or backend} was asked for"
        if best.passed is False:
            failures = (record_of(manifest, best) or {}).get("failures")
            why += (f"; WARNING: {best.variant} failed verification at export ({'; '.join(failures)})" if failures
                    else f"; WARNING: artifact {best.artifact!r} failed parity in the manifest")
        return best.but(reason=why + _problems_note(available))

    table, where, note = measured_timings(manifest, available, tuning)
    if table:
        by_name = {c.variant: c for c in benchmarked}
        for b in batches_by_closeness(table, batch_size):
            timed = sorted(((ms[b], name) for name, ms in table.items() if b in ms), key=lambda t: t[0])
            for ms, name in timed:
                if name in by_name:
                    return by_name[name].but(
                        reason=f"fastest variant that passed parity in {where} ({ms:.3g} ms median at batch {b}; "
                               f"{_batch_note(b, batch_size)})" + _problems_note(available))
        note = "; no benchmarked variant that passed parity can run here"
    if not candidates:
        raise BackendUnavailable(_nothing_fits(manifest, available, backend, precision, device, pool, variant))
    return candidates[0].but(reason=f"default order tensorrt > onnxruntime-cuda > openvino-bf16 > onnxruntime-cpu "
                                    f"> openvino > torch{note}" + _problems_note(available))


def _problems_note(available: Availability) -> str:
    """Backends whose library is installed but unusable here, with the library's own words."""
    return "".join(f"; {name} unusable here: {why}" for name, why in sorted(available.problems.items())
                   if "is not installed" not in why)


# -- benchmarks by batch size ---------------------------------------------------------------------------
def measured_timings(manifest: dict[str, Any], avail: Availability, tuning: dict[str, Any] | None
             ) -> tuple[dict[str, dict[int, float]], str, str]:
    """(timings {variant: {batch: ms}}, where they come from, the note when there are none): this machine's
    tuning record first, else an older manifest's "benchmarks" section recorded on this machine."""
    table = tuning_table(tuning or {}, manifest.get("artifacts") or {})
    if table:
        return table, "this machine's tuning record", ""
    bench = manifest.get("benchmarks") or {}
    machine = bench.get("machine") or {}
    if not bench.get("variants"):
        return {}, "", "; no benchmarks recorded for this machine (run `ganrt bench`)"
    if machine.get("cpu") != avail.cpu or machine.get("gpu") != avail.gpu:
        return {}, "", (f"; the bundle's benchmarks were recorded on another machine "
                        f"({machine.get('cpu')!r}/{machine.get('gpu')!r}), not used")
    return benchmark_table(bench), "the bundle's benchmarks on this machine", ""


def check_batch_hint(batch_size: Any) -> int | None:
    """The batch-size hint as an int (None stays None); ConfigError unless it is an integer >= 1."""
    if batch_size is None:
        return None
    try:
        b = None if isinstance(batch_size, bool) else operator.index(batch_size)
    except TypeError:
        b = None
    if b is None or b < 1:
        raise ConfigError(f"the batch-size hint must be an integer >= 1 (the typical request size), got "
                          f"{batch_size!r}; pass e.g. batch_size=8, or None to rank by the smallest batch measured")
    return b


def benchmark_table(bench: dict[str, Any]) -> dict[str, dict[int, float]]:
    """{variant: {batch: median ms}} of the variants an older manifest's "benchmarks" section marks passed.

    Reads "median_ms_by_batch" ({"1": ms, "64": ms, ...}) and, for manifests written before it existed,
    "median_ms" at the section's "batch_size".
    """
    table: dict[str, dict[int, float]] = {}
    for name, v in (bench.get("variants") or {}).items():
        if v.get("passed") is not True:
            continue
        ms: dict[int, float] = {}
        for b, t in (v.get("median_ms_by_batch") or {}).items():
            try:
                b = int(b)
            except (TypeError, ValueError):
                continue
            if b >= 1 and isinstance(t, (int, float)) and not isinstance(t, bool):
                ms[b] = float(t)
        b0, t0 = bench.get("batch_size"), v.get("median_ms")
        if isinstance(b0, int) and isinstance(t0, (int, float)) and not isinstance(t0, bool):
            ms.setdefault(b0, float(t0))
        if ms:
            table[name] = ms
    return table


def batches_by_closeness(table: dict[str, dict[int, float]], batch_size: int | None) -> list[int]:
    """The measured batch sizes, the one auto decides by first: closest to ``batch_size`` (ties: the smaller
    batch); without a hint, smallest first (the behaviour before hints)."""
    sizes = sorted({b for ms in table.values() for b in ms})
    if batch_size is None:
        return sizes
    return sorted(sizes, key=lambda b: (abs(b - batch_size), b))


def _batch_note(b: int, batch_size: int | None) -> str:
    if batch_size is None:
        return "the smallest batch measured; no batch-size hint"
    if b == batch_size:
        return f"the batch-size hint {batch_size}"
    return f"the measured batch closest to the batch-size hint {batch_size}"


def _auto_ok(c: Choice, precision: str | None, benchmarked: bool = False) -> bool:
    """auto never picks a variant whose parity failed, nor one with no parity on record (but the reference);
    a lossy precision without a requested precision only when ``benchmarked`` (it measured fastest)."""
    if c.auto is False or c.passed is False:
        return False
    if c.auto == "asked":
        return precision is not None
    if c.passed is not True:
        return False
    if precision is None and precisions.PRECISIONS[c.precision].lossy:
        return benchmarked
    return True


def _nothing_fits(manifest, avail: Availability, backend, precision, device, pool: _Pool, variant=None) -> str:
    asked = " ".join(x for x in (variant or (backend if backend != "auto" else "any backend"),
                                 precision and f"at {precision}", device and f"on {device}") if x)
    if variant is not None and backend == "auto":  # the backend a variant name starts with: only its reasons
        backend = next((name for name in BACKENDS if variant.startswith(f"{name}-")), backend)
    why = []
    if (backend != "auto" and BACKENDS[backend].devices == ("cuda",) or device == "cuda") and not avail.cuda:
        why.append("no CUDA GPU is visible here")
    for m in pool.missing:
        if ((backend == "auto" or m.backend == backend) and (precision is None or m.precision in (None, precision))
                and (device is None or m.device in (None, device))):
            why.append(m.text)
    if backend == "auto":
        why.append("every variant that could run here failed parity or has none on record")
    runnable_names = ", ".join(sorted({c.variant for c in pool.choices})) or "none"
    return (f"cannot run {asked} for this bundle here: {'; '.join(dict.fromkeys(why)) or 'no matching artifact'}. "
            f"Variants this machine can run from it: {runnable_names}")
