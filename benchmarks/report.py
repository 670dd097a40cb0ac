"""Benchmark outputs: results.json (versioned schema), report.md, latency.png, throughput.png, sample grids.

results.json (``schema`` "ganrt.bench", ``schema_version`` 1)::

    {"schema", "schema_version", "created", "bundle": {path, sha256, spec}, "options": {...},
     "environment": {...}, "runs": [{variant, backend, precision, device, batch_size, n_runs,
        threads, latency_ms: {min, median, mean, p90, p99, std, max}, images_per_s, ratio_to_torch_eager,
        ratio_to_onnxruntime_fp32, ratio_to_best, latent_ms, latent_share (the latents' share of the seeds-path
        call), spread: {p90_over_median, median_over_min}, machine_load (other processes' CPU share),
        unstable: [reasons], retried,
        first_call_ms, raw_ms: [...], warmup_ms: [...], cuda_events_ms?: {...}} | {..., error}],
     "load": {variant: {cold_start_s, rss_before_mb, rss_after_load_mb, peak_rss_mb, gpu_memory}},
     "parity": {variant: {psnr_db, min_image_psnr_db, max_abs_diff, ..., fd_ref, fd_ref_noise, fd_delta?,
        fd_delta_noise?, fd_label, fid_*? (with --inception-weights), passed, failures}},
     "gate": {"expression", "explicit": bool, "failed": [variant...]},
     "skipped": {variant: reason}, "samples": {variant: file}}
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.benchmarks.load import OTHERS_BUSY, SPREAD_MEDIAN_MIN, SPREAD_P90_MEDIAN
from ganrt.fileio import atomic_path, atomic_write_json, atomic_write_text
from ganrt.parity import json_safe

SCHEMA = "ganrt.bench"
SCHEMA_VERSION = 1
RUN_KEYS = ("variant", "backend", "precision", "batch_size", "latency_ms", "images_per_s")
LATENCY_KEYS = ("min", "median", "mean", "p90", "p99", "std")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def validate_results(results: dict[str, Any]) -> None:
    """Raise ValueError when ``results`` does not follow the schema above (used by tests and readers)."""
    if results.get("schema") != SCHEMA or results.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"not a {SCHEMA} v{SCHEMA_VERSION} result")
    for key in ("environment", "runs", "parity", "load", "options", "bundle", "gate", "skipped"):
        if key not in results:
            raise ValueError(f"results lack {key!r}")
    for run in results["runs"]:
        if "error" in run:
            continue
        missing = [k for k in RUN_KEYS if k not in run]
        if missing or any(k not in run["latency_ms"] for k in LATENCY_KEYS) or not run.get("raw_ms"):
            raise ValueError(f"run {run.get('variant')}@{run.get('batch_size')} lacks {missing or 'latency keys'}")
    for name, entry in results["parity"].items():
        for k in ("psnr_db", "max_abs_diff", "frac_gt_1", "nonfinite", "fd_ref", "passed"):
            if k not in entry:
                raise ValueError(f"parity entry {name} lacks {k!r}")


def write_results(out: Path, results: dict[str, Any]) -> Path:
    path = out / "results.json"
    atomic_write_json(path, json_safe(results))
    return path


# --- plots -----------------------------------------------------------------------------------------------------------
def _series(runs: list[dict[str, Any]], value) -> dict[str, tuple[list[int], list[float]]]:
    """{line name: (batch sizes, values)}: one line per variant, and per thread count when there are several."""
    timed = [r for r in runs if "latency_ms" in r]
    several = len({r.get("threads") for r in timed}) > 1
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in sorted(timed, key=lambda r: r["batch_size"]):
        name = f"{r['variant']}, {r['threads']} threads" if several else r["variant"]
        xs, ys = series.setdefault(name, ([], []))
        xs.append(r["batch_size"])
        ys.append(value(r))
    return series


def write_plots(out: Path, runs: list[dict[str, Any]], title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for fname, ylabel, value in (
        ("latency.png", "median latency per call (ms)", lambda r: r["latency_ms"]["median"]),
        ("throughput.png", "images / s (median)", lambda r: r["images_per_s"]),
    ):
        fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=110)
        series = _series(runs, value)
        batches = sorted({b for xs, _ in series.values() for b in xs})
        for i, (name, (xs, ys)) in enumerate(sorted(series.items())):
            style = "-" if not name.startswith("torch-") else "--"
            ax.plot(xs, ys, style, marker="os^vD<>ph*"[i % 10], label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if batches:
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {ylabel.split(' (')[0]} (dashed: torch peers)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        path = out / fname
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def write_sample_grids(out: Path, images: dict[str, np.ndarray], n: int = 16) -> dict[str, str]:
    """samples/<variant>.png: reference | variant | |diff| x 8, side by side."""
    from ganrt.images import make_grid, save_png

    ref = images["reference"][:n]
    nrow = int(math.ceil(math.sqrt(len(ref))))
    ref_grid = make_grid(ref, nrow=nrow)
    files = {}
    for name, imgs in images.items():
        if name == "reference":
            continue
        v = imgs[:n]
        diff = np.clip(np.abs(v.astype(np.int16) - ref.astype(np.int16)) * 8, 0, 255).astype(np.uint8)
        gap = np.full((ref_grid.shape[0], 8, ref_grid.shape[2]), 255, np.uint8)
        panel = np.concatenate([ref_grid, gap, make_grid(v, nrow=nrow), gap, make_grid(diff, nrow=nrow)], axis=1)
        rel = f"samples/{name}.png"
        save_png(out / rel, panel, text={"left": "torch fp32 reference", "middle": name, "right": "|diff| x 8"},
                 scale=2)
        files[name] = rel
    return files


# --- report.md -------------------------------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


UNSTABLE_MARK = " †"  # a row whose figures should not be quoted (see "Unstable rows")


def _matrix(runs, variants, batches, cell) -> str:
    by = {(r["variant"], r["batch_size"]): r for r in runs}
    rows = []
    for v in variants:
        row: list[Any] = [f"`{v}`"]
        for b in batches:
            r = by.get((v, b))
            if r is not None and "latency_ms" not in r:
                row.append(r.get("error", "error")[:40])
            elif r is None:
                row.append(None)
            else:
                row.append(_fmt(cell(r)) + (UNSTABLE_MARK if r.get("unstable") else ""))
        rows.append(row)
    return _table(["variant"] + [f"B={b}" for b in batches], rows)


def _seeds_path(runs: list[dict[str, Any]], batches: list[int]) -> list[str]:
    """The headline: what a user's `generate(seeds=...)` costs, and the latents' share of it."""
    rows = []
    for b in batches:
        timed = [r for r in runs if r["batch_size"] == b and "latency_ms" in r]
        if not timed:
            continue
        best = min(timed, key=lambda r: r["latency_ms"]["median"])
        rows.append([b, f"`{best['variant']}`", best["latency_ms"]["median"], best["images_per_s"],
                     best.get("latent_ms"), None if best.get("latent_share") is None else
                     f"{100 * best['latent_share']:.1f}%"])
    return ["## The seeds path: what `generate(seeds=...)` costs", "",
            "Every timing below is the call users make, `generate(seeds=...)`, end to end: the latents are drawn "
            "from the seeds inside the timed call. The latents alone (`latents_from_seeds`) cost:", "",
            _table(["batch", "fastest variant", "median ms", "images/s", "latents ms", "latents' share"], rows), ""]


def _unstable(runs: list[dict[str, Any]]) -> list[str]:
    shaky = [r for r in runs if r.get("unstable")]
    if not shaky:
        return ["Every row was stable: p90/median, median/min and the CPU other processes used stayed within "
                "their limits.", ""]
    return ["## Unstable rows (marked † above: do not quote them)", "",
            f"A row is flagged when its p90 is more than {SPREAD_P90_MEDIAN:g}x its median, its median more than "
            f"{SPREAD_MEDIAN_MIN:g}x its fastest call, or other processes took more than {OTHERS_BUSY:.0%} of the "
            "machine's CPU while it ran; flagged rows are timed once more and keep the flag if the retry is "
            "unstable too.", "",
            _table(["variant", "batch", "threads", "why", "retried"],
                   [[f"`{r['variant']}`", r["batch_size"], r.get("threads"), "; ".join(r["unstable"]),
                     "yes" if r.get("retried") else "no"] for r in shaky]), ""]


def _timing_sections(runs, variants, batches, threads, heading: bool) -> list[str]:
    """The latency, throughput and ratio matrices of one thread count."""
    at = f" at {threads} thread(s)" if heading else ""
    return [
        f"## Latency{at} (median ms per call; p90 in results.json)", "",
        _matrix(runs, variants, batches, lambda r: r["latency_ms"]["median"]), "",
        f"## Throughput{at} (images/s at the median)", "",
        _matrix(runs, variants, batches, lambda r: r["images_per_s"]), "",
        f"## Ratios{at} (median latency / torch eager fp32; lower is faster)", "",
        _matrix(runs, variants, batches, lambda r: r.get("ratio_to_torch_eager")), "",
        f"## Ratios to onnxruntime fp32{at} (the CPU baseline; lower is faster)", "",
        _matrix(runs, variants, batches, lambda r: r.get("ratio_to_onnxruntime_fp32")), "",
        f"## Ratios to the best variant at each batch size{at}", "",
        _matrix(runs, variants, batches, lambda r: r.get("ratio_to_best")), "",
    ]


def write_report(out: Path, results: dict[str, Any]) -> Path:
    runs = results["runs"]
    threads = results["options"]["threads"]
    threads = threads if isinstance(threads, list) else [threads]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    batches = sorted({r["batch_size"] for r in runs})
    env = results["environment"]
    spec = results["bundle"]["spec"]
    gate = results["gate"]
    lines = [
        f"# ganrt bench: {spec['arch']} {spec['channels']}x{spec['height']}x{spec['width']}",
        "",
        f"Bundle `{results['bundle']['path']}` (manifest sha256 {results['bundle']['sha256'][:12]}), "
        f"{results['created']}.",
        f"Machine: {env['cpu']['model']} ({env['cpu']['usable_cpus']} usable CPUs, flags: "
        f"{', '.join(env['cpu']['flags']) or 'n/a'}); GPU: {(env.get('gpu') or {}).get('name', 'none')}.",
        f"torch {env['versions'].get('torch')}, onnxruntime {env['versions'].get('onnxruntime')}, openvino "
        f"{env['versions'].get('openvino')}, TensorRT {env.get('tensorrt')}; threads per backend: "
        f"{', '.join(map(str, threads))}.",
        f"Timing: {results['options']['duration_s']} s per variant and batch size (at least "
        f"{results['options']['min_runs']} calls) in {results['options']['repeats']} interleaved rounds, after "
        f"{results['options']['warmup']} warm-up calls; wall clock around `generate(seeds=...)` (seeds in, uint8 "
        f"images out).",
        "",
        *_seeds_path(runs, batches),
        *[line for t in threads for line in _timing_sections(
            [r for r in runs if r.get("threads", t) == t], variants, batches, t, len(threads) > 1)],
        *_unstable(runs),
        "## Cold start and memory",
        "",
        _table(["variant", "graph", "load (s)", "first call (ms, B=" + str(batches[0]) + ")" if batches else
                "first call", "RSS after load (MB)", "peak RSS (MB)"],
               [[f"`{v}`", _graphs(info), info.get("cold_start_s"), next((r.get("first_call_ms") for r in runs
                                                          if r["variant"] == v and batches and
                                                          r["batch_size"] == batches[0]), None),
                 info.get("rss_after_load_mb"), info.get("peak_rss_mb")]
                for v, info in results["load"].items()]),
        "",
        f"## Parity vs the torch fp32 reference ({_first(results['parity'], 'n_images')} images, same seeds; "
        f"{_first(results['parity'], 'fd_label')})",
        "",
        f"Gate: `{gate['expression']}`" + ("" if gate["explicit"] else " (default; pass --gate to enforce)") + ".",
        "",
        _table(["variant", "PSNR (dB)", "worst image (dB)", "max abs Δ", "mean abs Δ", "frac > 1 level", "FD vs ref",
                "noise", "FD delta vs real", "noise", "passed"],
               [[f"`{v}`", e.get("psnr_db"), e.get("min_image_psnr_db"), e.get("max_abs_diff"),
                 e.get("mean_abs_diff"), e.get("frac_gt_1"), e.get("fd_ref"), e.get("fd_ref_noise"),
                 e.get("fd_delta"), e.get("fd_delta_noise"),
                 "yes" if e.get("passed") else "**NO**: " + "; ".join(e.get("failures", [])).replace("|", "/")]
                for v, e in results["parity"].items()]),
        "",
        *_fid_table(results["parity"]),
    ]
    if results.get("samples"):
        lines += ["## Samples (left: reference, middle: variant, right: abs diff x 8)", ""]
        lines += [f"- `{v}`: ![{v}]({f})" for v, f in results["samples"].items()]
        lines.append("")
    if results.get("skipped"):
        lines += ["## Not measured here", ""]
        lines += [f"- `{v}`: {why}" for v, why in results["skipped"].items()]
        lines.append("")
    lines += ["Plots: `latency.png`, `throughput.png`. Every raw timing is in `results.json`.", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _fid_table(parity: dict[str, dict[str, Any]]) -> list[str]:
    """FID-proper parity (the standard Inception weights), when the bench had them."""
    if not any("fid_ref" in e for e in parity.values()):
        return []
    return ["## FID parity (standard Inception-v3 weights: comparable with published FIDs)", "",
            _table(["variant", "FID vs ref", "noise", "FID vs real", "reference's FID vs real", "delta", "noise"],
                   [[f"`{v}`", e.get("fid_ref"), e.get("fid_ref_noise"), e.get("fid_real"),
                     e.get("fid_reference_real"), e.get("fid_delta"), e.get("fid_delta_noise")]
                    for v, e in parity.items()]), ""]


def _first(parity: dict[str, dict[str, Any]], key: str) -> Any:
    return next((e.get(key) for e in parity.values()), None)


def _graphs(load_info: dict[str, Any]) -> str:
    """The artifact a variant runs, and its small-batch graph when it has one: 'a (B<=3: a-small)'."""
    text = f"`{load_info.get('artifact')}`"
    small = load_info.get("small_batch_graph")
    if small:
        text += f" (B<={small[1]}: `{small[0]}`)"
    return text
