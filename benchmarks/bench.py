"""``run_bench``: speed of every variant of a bundle against its peers, parity against the reference, report.

The steps: load every variant (cold start timed) -> interleaved timings over the batch sweep -> parity of
each variant on the same seeds (pixels + FD against the noise floor) -> gate -> results.json, report.md,
plots, sample grids -> the medians merged into the bundle's tuning record for this machine and thread count
(``tuning/<machine-key>.json``, ganrt.runtime.tuning; read by ``backend="auto"``). The bundle's manifest
and artifacts are never written; the gate is a verdict for CI and is not recorded in the bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganrt.benchmarks.gate import DEFAULT_GATE, evaluate_gate, needs_real_data, parse_gate
from ganrt.benchmarks.harness import (
    ORT_BASELINE,
    REFERENCE,
    candidate_variants,
    load_variants,
    time_variants,
)
from ganrt.errors import ConfigError, GanrtError


def parse_threads(value: int | str | list[int] | None) -> list[int]:
    """'1,2' (or 2, or [1, 2]) -> [1, 2]: the thread counts the bench is run at, an axis of its own; None:
    the physical cores."""
    from ganrt.benchmarks.harness import thread_count

    if value is None:
        return [thread_count(None)]
    items = [value] if isinstance(value, int) else (value if isinstance(value, list) else str(value).split(","))
    out = []
    for item in items:
        try:
            n = int(str(item).strip())
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"cannot read threads {value!r}: expected comma-separated integers >= 1, e.g. '1,2'")
        out.append(n)
    return sorted(set(out))


def parse_batch_sizes(text: str, max_batch: int) -> list[int]:
    """'1,8,64,max' -> sorted unique ints; 'max' is the bundle's max_batch."""
    sizes = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "max":
            sizes.append(max_batch)
            continue
        try:
            b = int(part)
        except ValueError:
            raise ConfigError(f"cannot read batch sizes {text!r}: expected comma-separated integers or 'max', "
                              "e.g. '1,8,64,max'") from None
        if b < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {b}")
        sizes.append(b)
    too_big = [b for b in sizes if b > max_batch]
    if too_big:
        raise ConfigError(f"batch size {too_big[0]} exceeds the bundle's max_batch {max_batch}; re-export with a "
                          f"larger --max-batch or drop it")
    return sorted(set(sizes))


def _real_features(bundle, dataset: str | None, extractors: list, n: int, log) -> tuple[list, str | None]:
    """Features of n real images for fd_delta (and fid_delta), one array per extractor, from one load of the
    given dataset, else of the one the checkpoint names; ([None, ...], why) without them."""
    source = dataset or ((bundle.source or {}).get("dataset") or {}).get("name")
    if not source:
        return [None] * len(extractors), "no dataset given (--dataset) and none recorded in the bundle"
    try:
        from ganrt.metrics.stats_cache import reference_features
        from ganrt.train.datasets import load_dataset

        data = load_dataset(source, bundle.spec.height, channels=bundle.spec.channels)
        return [reference_features(data.images, data.identity, e, n=n).features for e in extractors], None
    except GanrtError as e:
        log(f"no real data for fd_delta: {e}")
        return [None] * len(extractors), str(e)


def run_bench(bundle_dir: str | Path, out: str | Path, *, batch_sizes: str = "1,8,64,max", duration: float = 2.0,
              min_runs: int = 10, warmup: int = 3, repeats: int = 2, variants: list[str] | None = None,
              gate: str | None = None, classifier: str | Path | None = None, dataset: str | None = None,
              parity_n: int = 256, threads: int | str | list[int] | None = None, record: bool = True,
              samples: bool = True,
              trust_code: bool = False, inception_weights: str | Path | None = None,
              progress: Callable[[int, str], None] | None = None,
              log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Benchmark ``bundle_dir`` into ``out``; returns the results dict (also written as results.json).

    ``threads``: one thread count or several ("1,2"): every variant is loaded and timed at each, and each is
    recorded under its own machine key.
    ``record``: merge the medians into the bundle's tuning record (skipped with a warning when read-only).
    ``trust_code``: a bundle of a user's module runs its torch reference (imports the code its spec names).
    ``inception_weights``: the standard FID Inception-v3 weights (safetensors; ``ganrt
    convert-inception-weights``): FID-proper parity (``fid_*``) beside the FD of ``classifier``/pixels.
    """
    import torch

    from ganrt.benchmarks import report
    from ganrt.benchmarks.environment import collect_environment
    from ganrt.benchmarks.parity import fidelity
    from ganrt.bundle import Bundle
    from ganrt.metrics.extractors import get_extractor

    bundle = Bundle.open(bundle_dir)
    out = Path(out)
    checks = parse_gate(gate) if gate is not None else parse_gate(DEFAULT_GATE)
    max_batch = int(bundle.graph.get("max_batch") or 64)
    sizes = parse_batch_sizes(batch_sizes, max_batch)
    if parity_n < 4:
        raise ConfigError(f"--parity-n must be >= 4, got {parity_n}")
    extractor = get_extractor("domain", classifier=classifier) if classifier else get_extractor("pixels")
    fid_extractor = get_extractor("inception", inception_weights=inception_weights) if inception_weights else None
    if any(c.metric.startswith("fid_") for c in checks) and fid_extractor is None:
        raise ConfigError("the gate uses FID figures, which need the standard Inception weights: pass "
                          "--inception-weights FILE (made by `ganrt convert-inception-weights`)")
    real, real_note, fid_real = None, None, None
    if needs_real_data(checks) or dataset or classifier or fid_extractor:
        extractors = [extractor, fid_extractor] if fid_extractor is not None else [extractor]
        features, real_note = _real_features(bundle, dataset, extractors, parity_n, log)
        real, fid_real = features[0], (features[1] if fid_extractor is not None else None)
        if real is None and needs_real_data(checks):
            raise ConfigError(f"the gate compares with real images (fd_delta / fid_delta), which needs them: "
                              f"{real_note}; pass --dataset")
    thread_counts = parse_threads(threads)
    out.mkdir(parents=True, exist_ok=True)

    requests, unavailable = candidate_variants(bundle.to_dict(), trust_code=trust_code)
    only = None
    if variants:
        only = list(dict.fromkeys(variants))
        for peer in (ORT_BASELINE, REFERENCE):  # the peers every ratio is taken against
            if peer not in only:
                only.insert(0, peer)
    runs: list[dict[str, Any]] = []
    parity = images = load_info = skipped = None
    steps = {"total": 0}

    def tick(what: str) -> None:
        if progress:
            progress(steps["total"], what)

    for t in thread_counts:
        torch.set_num_threads(t)
        loaded, skipped_t = load_variants(bundle.path, requests, threads=t, only=only, log=log,
                                          trust_code=trust_code)
        if skipped is None:
            skipped = skipped_t
            if only is None:
                skipped.update(unavailable)
        if not loaded:
            raise ConfigError(f"no variant of {bundle.path} can run here: " +
                              "; ".join(f"{k}: {v}" for k, v in skipped_t.items()))
        steps["total"] = len(loaded) * len(sizes) * repeats * len(thread_counts) + len(loaded)  # parity: once
        try:
            runs += time_variants(loaded, sizes, duration=duration, min_runs=min_runs, warmup=warmup,
                                  repeats=repeats, threads=t, progress=lambda t=t: tick(f"timing, {t} thread(s)"),
                                  log=log)
            if parity is None:  # the images do not depend on the thread count: parity once
                parity, images = fidelity(bundle.path, {v.name: v.generator for v in loaded}, extractor,
                                          n=parity_n, batch=min(max_batch, 64), real_features=real,
                                          progress=lambda: tick("parity"), trust_code=trust_code,
                                          fid_extractor=fid_extractor, fid_real_features=fid_real)
                load_info = {v.name: {"cold_start_s": v.cold_start_s, "rss_before_mb": v.rss_before_mb,
                                      "rss_after_load_mb": v.rss_after_load_mb, "peak_rss_mb": v.peak_rss_mb,
                                      "gpu_memory": v.gpu_memory, "artifact": v.generator.artifact,
                                      "small_batch_graph": v.generator.small_batch_graph,
                                      "reason": v.generator.reason} for v in loaded}
        finally:
            for v in loaded:
                v.generator.close()
    failed = []
    for name, entry in parity.items():
        entry["failures"] = evaluate_gate(checks, entry)
        entry["passed"] = not entry["failures"]
        if not entry["passed"]:
            failed.append(name)
    results: dict[str, Any] = {
        "schema": report.SCHEMA, "schema_version": report.SCHEMA_VERSION, "created": report.now(),
        "bundle": {"path": str(bundle.path), "sha256": bundle.sha256(), "spec": bundle.spec.to_dict(),
                   "max_batch": max_batch},
        "options": {"batch_sizes": sizes, "duration_s": duration, "min_runs": min_runs, "warmup": warmup,
                    "repeats": repeats, "threads": thread_counts, "parity_n": parity_n, "variants": variants,
                    "extractor": extractor.identity(),
                    "fid_extractor": fid_extractor.identity() if fid_extractor else None,
                    "real_data": real_note or ("yes" if real is not None else None)},
        "environment": collect_environment(),
        "runs": runs, "load": load_info, "parity": parity,
        "gate": {"expression": gate or DEFAULT_GATE, "explicit": gate is not None, "failed": failed},
        "skipped": skipped,
    }
    results["tuning_record"] = ({str(t): record_results(bundle, results, t, log) for t in thread_counts}
                                if record else None)
    results["samples"] = report.write_sample_grids(out, images) if samples else {}
    report.write_results(out, results)
    report.write_plots(out, runs, f"{bundle.spec.arch} {bundle.spec.height}x{bundle.spec.width}")
    report.write_report(out, results)
    return results


def tuning_rows(bundle, results: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """One row per (variant, batch size) timed at ``threads`` for ganrt.runtime.tuning.record_tuning, naming
    the artifact it ran (and that artifact's sha256, so timings of a since rebuilt artifact are not used). No
    parity verdict: auto ranks only variants whose export parity passed, whatever a bench gate said."""
    rows = []
    for r in results["runs"]:
        if "latency_ms" not in r or r.get("threads") != threads:
            continue
        artifact = (results["load"].get(r["variant"]) or {}).get("artifact")
        rows.append({"variant": r["variant"], "batch_size": r["batch_size"], "median_ms": r["latency_ms"]["median"],
                     "p90_ms": r["latency_ms"]["p90"], "n_runs": r.get("n_runs"), "backend": r["backend"],
                     "precision": r["precision"], "artifact": artifact,
                     "artifact_sha256": bundle.artifacts.get(artifact, {}).get("sha256")})
    return rows


def record_results(bundle, results: dict[str, Any], threads: int, log: Callable[[str], None]) -> str | None:
    """Merge this run's medians into the bundle's tuning record for this machine at ``threads``; the record's
    path, or None (with a warning) when the bundle cannot be written (read-only)."""
    import warnings

    from ganrt.runtime.tuning import key_of, machine_identity, record_tuning

    identity = machine_identity(threads)
    try:
        return str(record_tuning(bundle.path, key_of(identity), tuning_rows(bundle, results, threads),
                                 identity=identity))
    except OSError as e:
        message = (f"the bundle {bundle.path} cannot be written ({e.strerror or e}): timings not recorded for "
                   f"backend auto; results.json has them")
        warnings.warn(f"ganrt: {message}", RuntimeWarning, stacklevel=2)
        log(f"warning: {message}")
        return None
