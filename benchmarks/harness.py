"""The latency/throughput harness: load every variant of a bundle, time each batch size, interleaved.

The variants are every one the table of backends says this machine can run from the bundle
(``ganrt.runtime.selection.runnable``), each loaded by name through ``ganrt.runtime.load``; a backend with
nothing to run here is recorded as skipped with the reason. Timing:

- cold start (``load``) and the first call are timed separately from the steady state;
- per (variant, batch size): warm-up calls, then timed calls for ``duration`` seconds and at least
  ``min_runs`` calls, spread over ``repeats`` rounds in which every variant takes its turn, so drift and
  noise on a shared machine hit all variants alike;
- the timed call is the user's: ``generate(seeds=...)`` end to end (latents drawn from the seeds inside the
  call, host arrays in, uint8 host arrays out); the cost of drawing the latents alone is timed beside it
  (``latent_ms``, ``latent_share``);
- every raw timing is kept (ms), with the spread of each row (p90/median, median/min) and the share of the
  machine's CPU that other processes took while it ran (``ganrt.benchmarks.load``): a row past the limits is
  flagged ``unstable`` with the reasons, and retried once;
- on CUDA, torch variants are also timed with CUDA events on a non-default stream, device-resident
  (no copies) and with the host<->device copies (pinned buffers);
- peak host RSS per variant (``/proc/self/status`` VmHWM, reset before each load) and GPU memory.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import GanrtError

REFERENCE = "torch-fp32"
ORT_BASELINE = "onnxruntime-fp32"  # the CPU baseline the fast-path ratios are taken against
PEERS = (REFERENCE, "torch-fp32-compile", ORT_BASELINE)  # timed first: every ratio is taken against them


def candidate_variants(manifest: dict[str, Any], available: Any = None,
                       trust_code: bool = False) -> tuple[list[Any], dict[str, str]]:
    """Every variant of the bundle this machine can run, from the table of backends, peers first; and, for a
    backend with nothing to run here, why ({backend: reason}). ``trust_code``: a user's module runs in torch."""
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import here, runnable

    available = available or Availability.probe()
    choices = sorted(runnable(manifest, available, trust_code).choices,
                     key=lambda c: PEERS.index(c.variant) if c.variant in PEERS else len(PEERS))
    return choices, here(manifest, available, trust_code)["unavailable"]


# --- memory ----------------------------------------------------------------------------------------------------------
def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    v = _proc_status_mb("VmHWM")
    if v is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return v


def gpu_memory_mb() -> dict[str, float] | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return {"device_used_mb": (total - free) / 2**20, "torch_peak_allocated_mb":
                torch.cuda.max_memory_allocated() / 2**20}
    except Exception:
        return None


# --- statistics ------------------------------------------------------------------------------------------------------
def latency_percentiles(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no timings")
    return {"min": float(x.min()), "median": float(np.median(x)), "mean": float(x.mean()),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99)), "std": float(x.std()),
            "max": float(x.max())}


def time_calls(fn: Callable[[], Any], *, duration: float, min_runs: int, max_runs: int = 1_000_000) -> list[float]:
    """Call ``fn`` until ``duration`` seconds have passed and at least ``min_runs`` calls; ms per call."""
    samples: list[float] = []
    deadline = time.perf_counter() + duration
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


# --- loaded variants -------------------------------------------------------------------------------------------------
@dataclass
class LoadedVariant:
    name: str
    choice: Any  # ganrt.runtime.Choice: what was asked for
    generator: Any  # ganrt.runtime.Generator
    cold_start_s: float
    rss_before_mb: float | None
    rss_after_load_mb: float | None
    gpu_memory: dict[str, float] | None
    first_call_s: dict[int, float] = field(default_factory=dict)
    peak_rss_mb: float | None = None

    @property
    def backend(self) -> str:
        return self.generator.backend

    @property
    def precision(self) -> str:
        return self.generator.precision


def load_variants(bundle_dir: Path, choices: list[Any], *, threads: int | None = None,
                  only: list[str] | None = None, log: Callable[[str], None] = lambda s: None,
                  trust_code: bool = False) -> tuple[list[LoadedVariant], dict[str, str]]:
    """Load each variant by name (cold start timed); returns (loaded variants, {name: why skipped})."""
    from ganrt.runtime import load

    loaded: list[LoadedVariant] = []
    skipped: dict[str, str] = {}
    for choice in choices:
        name = choice.variant
        if only is not None and name not in only:
            continue
        if any(v.name == name for v in loaded) or name in skipped:
            continue
        gc.collect()
        reset_peak_rss()
        before = rss_mb()
        t0 = time.perf_counter()
        try:
            gen = load(bundle_dir, variant=name, threads=threads, trust_code=trust_code)
        except GanrtError as e:
            skipped[name] = str(e).split("\n")[0]
            log(f"skip {name}: {skipped[name]}")
            continue
        cold = time.perf_counter() - t0
        if gen.variant != name and (gen.variant in skipped or any(v.name == gen.variant for v in loaded)):
            skipped[name] = f"runs as {gen.variant} here ({gen.reason}), measured under that name"
            gen.close()
            continue
        loaded.append(LoadedVariant(gen.variant, choice, gen, cold, before, rss_mb(), gpu_memory_mb()))
    if only is not None:
        for name in only:
            if name not in skipped and not any(v.name == name for v in loaded):
                skipped[name] = "not a variant of this bundle on this machine"
    return loaded, skipped


def bench_inputs(spec, batch: int) -> dict[str, Any]:
    """A batch's inputs (seeds 0..B-1): the seeds the timed call draws its latents from, the latents themselves
    (for the device-side timings), labels and truncation."""
    from ganrt.latents import labels_from_seeds, latents_from_seeds

    seeds = list(range(batch))
    return {"seeds": seeds, "z": latents_from_seeds(seeds, spec.latent_dim),
            "labels": labels_from_seeds(seeds, spec.num_classes) if spec.conditional else None,
            "truncation": np.ones(batch, np.float32) if spec.has_truncation else None}


def latent_timings(spec, batch_sizes: list[int], *, calls: int = 30) -> dict[int, float]:
    """{batch: median ms of latents_from_seeds(range(batch), latent_dim)}: the seeds' share of a timed call."""
    from ganrt.latents import latents_from_seeds

    out = {}
    for b in batch_sizes:
        seeds = list(range(b))
        out[b] = float(np.median(time_calls(lambda s=seeds: latents_from_seeds(s, spec.latent_dim), duration=0.0,
                                            min_runs=calls)))
    return out


@dataclass
class Timing:
    variant: str
    batch_size: int
    samples_ms: list[float] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)
    device_ms: dict[str, list[float]] = field(default_factory=dict)  # "compute" / "with_copies" (CUDA events)
    error: str | None = None
    busy: list[tuple[float, float]] = field(default_factory=list)  # (seconds, others' CPU share) per round
    retried: bool = False

    @property
    def others(self) -> float | None:
        """Other processes' share of the machine's CPU while this row ran (time-weighted over its rounds)."""
        total = sum(s for s, o in self.busy if o is not None)
        return sum(s * o for s, o in self.busy if o is not None) / total if total else None


def run_timings(variants: list[LoadedVariant], batch_sizes: list[int], *, duration: float, min_runs: int,
                warmup: int, repeats: int, progress: Callable[[], None] | None = None,
                only: set[tuple[str, int]] | None = None) -> dict[tuple[str, int], Timing]:
    """Interleaved timings: for each repeat, every (variant, batch) gets duration/repeats seconds.

    ``only``: time just these (variant, batch) rows (a retry of unstable rows).
    """
    from ganrt.benchmarks.load import LoadMeter

    keys = [(v, b) for v in variants for b in batch_sizes if only is None or (v.name, b) in only]
    timings = {(v.name, b): Timing(v.name, b, retried=only is not None) for v, b in keys}
    inputs = {b: bench_inputs(variants[0].generator.spec, b) for b in batch_sizes} if variants else {}
    per_round = duration / repeats
    runs_per_round = max(1, -(-min_runs // repeats))
    for r in range(repeats):
        for v, b in keys:
            t = timings[(v.name, b)]
            if t.error:
                continue
            feeds = inputs[b]
            call = lambda g=v.generator, f=feeds: g.generate(seeds=f["seeds"], labels=f["labels"],
                                                             truncation=f["truncation"])
            try:
                if r == 0:
                    t0 = time.perf_counter()
                    call()
                    v.first_call_s.setdefault(b, time.perf_counter() - t0)
                    t.warmup_ms = [v.first_call_s[b] * 1e3] + time_calls(call, duration=0.0, min_runs=warmup)
                with LoadMeter() as meter:
                    t.samples_ms += time_calls(call, duration=per_round, min_runs=runs_per_round)
                t.busy.append((meter.seconds, meter.others))
            except GanrtError as e:
                t.error = str(e).split("\n")[0]
            if progress:
                progress()
            v.peak_rss_mb = max(v.peak_rss_mb or 0.0, peak_rss_mb() or 0.0)
    for v in {v.name: v for v, _ in keys}.values():
        if v.choice.device == "cuda" and v.backend == "torch":
            for b in (b for name, b in timings if name == v.name):
                try:
                    timings[(v.name, b)].device_ms = cuda_event_timings(v, inputs[b], duration=duration,
                                                                        min_runs=min_runs, warmup=warmup)
                except Exception as e:  # device timing is extra information; the wall-clock numbers stand
                    timings[(v.name, b)].device_ms = {"error": [str(e).split(chr(10))[0]]}  # type: ignore
    return timings


def cuda_event_timings(variant: LoadedVariant, feeds: dict[str, Any], *, duration: float, min_runs: int,
                       warmup: int) -> dict[str, list[float]]:
    """CUDA-event timings (ms) of a torch variant's module on a non-default stream.

    ``compute``: inputs already on the device, output left there (no copies in the timed region).
    ``with_copies``: pinned host inputs copied in, output copied back to pinned host memory.
    The module is rebuilt from the bundle's reference weights exactly as the torch backend runs it
    (same precision, post-processing in the graph).
    """
    import torch

    from ganrt.checkpoint import load_generator
    from ganrt.postprocess import ToUint8NHWC

    gen = variant.generator  # a torch variant: loaded, so its code (a user's module) was trusted
    module, spec = load_generator(gen.bundle.artifact_path("weights"), device="cuda", trust_code=True)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(gen.precision, torch.float32)
    module = module.to(dtype)
    post = ToUint8NHWC(spec.output_range).cuda()
    stream = torch.cuda.Stream()
    host = {k: torch.from_numpy(np.asarray(v)).pin_memory() for k, v in feeds.items() if v is not None}
    dev = {k: v.to("cuda") for k, v in host.items()}
    out_host = torch.empty((len(feeds["z"]), spec.height, spec.width, spec.channels), dtype=torch.uint8).pin_memory()

    def forward(d):
        return post(module(d["z"].to(dtype), labels=d.get("labels"),
                           truncation=d["truncation"].to(dtype) if "truncation" in d else None))

    def one(with_copies: bool) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream), torch.inference_mode():
            start.record(stream)
            if with_copies:
                d = {k: v.to("cuda", non_blocking=True) for k, v in host.items()}
                out_host.copy_(forward(d), non_blocking=True)
            else:
                forward(dev)
            end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    result: dict[str, list[float]] = {}
    for key, copies in (("compute", False), ("with_copies", True)):
        for _ in range(warmup):
            one(copies)
        samples: list[float] = []
        deadline = time.perf_counter() + duration
        while len(samples) < min_runs or time.perf_counter() < deadline:
            samples.append(one(copies))
        result[key] = samples
    torch.cuda.empty_cache()
    return result


def summarize_runs(variants: list[LoadedVariant], timings: dict[tuple[str, int], Timing],
                   latent_ms: dict[int, float] | None = None, threads: int | None = None) -> list[dict[str, Any]]:
    """The ``runs`` list of results.json, with ratios to torch eager fp32, to onnxruntime fp32 (the CPU
    baseline) and to the best variant per batch, each row's spread, machine load and stability verdict."""
    from ganrt.benchmarks.load import unstable

    runs = []
    by = {v.name: v for v in variants}
    for (name, b), t in timings.items():
        v = by[name]
        entry: dict[str, Any] = {"variant": name, "backend": v.backend, "precision": v.precision,
                                 "device": v.choice.device, "batch_size": b, "threads": threads,
                                 "n_runs": len(t.samples_ms)}
        if t.error or not t.samples_ms:
            entry["error"] = t.error or "no timings"
            runs.append(entry)
            continue
        lat = latency_percentiles(t.samples_ms)
        entry.update({"latency_ms": lat, "images_per_s": b * 1e3 / lat["median"],
                      "first_call_ms": v.first_call_s.get(b, float("nan")) * 1e3,
                      "spread": {"p90_over_median": lat["p90"] / lat["median"],
                                 "median_over_min": lat["median"] / lat["min"] if lat["min"] > 0 else None},
                      "machine_load": t.others, "unstable": unstable(lat, t.others), "retried": t.retried,
                      "raw_ms": [round(s, 5) for s in t.samples_ms],
                      "warmup_ms": [round(s, 5) for s in t.warmup_ms]})
        if latent_ms and b in latent_ms:
            entry["latent_ms"] = latent_ms[b]
            entry["latent_share"] = latent_ms[b] / lat["median"]
        if t.device_ms:
            entry["cuda_events_ms"] = {k: (latency_percentiles(s) if s and isinstance(s[0], float) else s)
                                       for k, s in t.device_ms.items()}
            entry["cuda_events_raw_ms"] = t.device_ms
        runs.append(entry)
    for b in {r["batch_size"] for r in runs}:
        timed = [r for r in runs if r["batch_size"] == b and "latency_ms" in r]
        if not timed:
            continue
        best = min(r["latency_ms"]["median"] for r in timed)
        eager = next((r["latency_ms"]["median"] for r in timed if r["variant"] == REFERENCE), None)
        ort = next((r["latency_ms"]["median"] for r in timed if r["variant"] == ORT_BASELINE), None)
        for r in timed:
            r["ratio_to_best"] = r["latency_ms"]["median"] / best
            r["ratio_to_torch_eager"] = r["latency_ms"]["median"] / eager if eager else None
            r["ratio_to_onnxruntime_fp32"] = r["latency_ms"]["median"] / ort if ort else None
    return runs


def time_variants(variants: list[LoadedVariant], batch_sizes: list[int], *, duration: float, min_runs: int,
                  warmup: int, repeats: int, threads: int | None = None, progress: Callable[[], None] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Time every (variant, batch), retry the rows flagged unstable once (the retry's figures replace the
    first ones, still flagged when they are still unstable), and summarize."""
    from ganrt.benchmarks.load import unstable

    timings = run_timings(variants, batch_sizes, duration=duration, min_runs=min_runs, warmup=warmup,
                          repeats=repeats, progress=progress)
    shaky = {key for key, t in timings.items()
             if t.samples_ms and not t.error and unstable(latency_percentiles(t.samples_ms), t.others)}
    if shaky:
        log(f"retrying {len(shaky)} unstable row(s) once: " + ", ".join(f"{n}@{b}" for n, b in sorted(shaky)))
        timings.update(run_timings(variants, batch_sizes, duration=duration, min_runs=min_runs, warmup=warmup,
                                   repeats=repeats, only=shaky))
    latent_ms = latent_timings(variants[0].generator.spec, batch_sizes) if variants else {}
    return summarize_runs(variants, timings, latent_ms, threads)


def thread_count(threads: int | None) -> int:
    from ganrt.runtime.machine import physical_cores

    return threads or physical_cores() or (os.cpu_count() or 1)
