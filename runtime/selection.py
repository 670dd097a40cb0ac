"""Which backend runs a bundle here: a pure function of the manifest and of what this machine has.

``select(manifest, available, backend=..., precision=..., device=...)`` returns a ``Choice`` saying which
backend, precision, device and artifact to load and why. ``backend="auto"`` picks, among the variants
this machine can run whose parity passed:

1. by this machine's tuning record (``tuning``: ganrt.runtime.tuning.read_tuning for the machine key
   ``load`` runs with; written by ``ganrt bench``): the variant with the lowest median latency among those
   whose artifact passed *export* parity (a bench gate never changes this), at the measured batch size
   closest to the ``batch_size`` hint (ties: the smaller batch; no hint: the smallest batch). When nothing
   measured at that batch can run here, the next closest measured batch decides. Bundles benched by an
   older ganrt have their timings in the manifest's "benchmarks" section instead: read the same way when
   recorded on this machine (same CPU and GPU strings), skipping the variants that section marks failed;
2. else by the default order: tensorrt > onnxruntime-cuda > openvino-bf16 (only when the CPU has bf16
   and a bf16 artifact passed parity) > onnxruntime-cpu > torch.

A user's own module (spec "arch": "external") runs on torch only with ``trust_code=True`` (rebuilding it
imports the code its spec names) and never without a factory; its graphs run on every other backend.

Without a requested precision, GPU backends prefer fp16 > bf16 > fp32 and CPU backends fp32; int8 is
lossy, so without benchmarks it is used only when asked for. Nothing here imports a backend.

The CPU fast path's artifacts: OpenVINO runs "onnx-fp32-rw" (the ConvTranspose-rewritten graph) for fp32
when the bundle has it, "onnx-bf16" for bf16 and the NNCF IR "openvino-int8" for int8; onnxruntime runs
"onnx-fp32-rw" as the variant "onnxruntime-fp32-rw" (option "rw"), beside plain "onnxruntime-fp32".
``variant="onnxruntime-fp32-rw"`` (any variant name) asks for one variant exactly.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

from ganrt.bundle import PRECISIONS
from ganrt.errors import BackendUnavailable, BundleError, ConfigError
from ganrt.runtime.machine import Availability
from ganrt.runtime.tuning import tuning_table

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
DEVICES = ("cpu", "cuda")
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
GPU_PRECISION_ORDER = ("fp16", "bf16", "fp32")
ENGINE_FILE = re.compile(r"(?P<precision>[a-z0-9]+)\.sm(?P<sm>\d+)\.trt(?P<trt>[0-9.]+?)\.plan$")


@dataclass(frozen=True)
class Choice:
    backend: str  # "torch" | "onnxruntime" | "openvino" | "tensorrt"
    precision: str
    device: str  # "cpu" | "cuda"
    artifact: str  # manifest artifact name ("weights", "onnx-fp32", "trt-fp16-sm89-trt10.13", ...)
    options: tuple[str, ...] = ()  # variant options: "cuda", "trtep", "compile", "cudagraph", "rw"
    passed: bool | None = None  # the artifact's parity verdict in the manifest
    reason: str = ""

    @property
    def variant(self) -> str:
        return "-".join((self.backend, self.precision, *self.options))

    @property
    def provider(self) -> str | None:
        """onnxruntime's execution provider for this choice."""
        if self.backend != "onnxruntime":
            return None
        return ORT_PROVIDERS["tensorrt" if "trtep" in self.options else self.device]

    def but(self, **changes: Any) -> "Choice":
        from dataclasses import replace

        return replace(self, **changes)


@dataclass
class _Pool:
    """Every variant this machine could run from this bundle, in default order, and why others are not."""

    choices: list[Choice] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


# -- engines --------------------------------------------------------------------------------------------
def engine_target(name: str, entry: dict[str, Any]) -> tuple[str | None, str | None]:
    """(sm, trt version) an engine was built for: from its entry's fields, else from its file name."""
    sm = entry.get("sm") or entry.get("compute_capability")
    trt = entry.get("tensorrt") or entry.get("trt_version")
    m = ENGINE_FILE.search(str(entry.get("file", "")))
    if m:
        sm = sm or m.group("sm")
        trt = trt or m.group("trt")
    if sm is not None:
        sm = "sm" + str(sm).lower().removeprefix("sm").replace(".", "")
    return sm, (None if trt is None else str(trt))


def trt_version_matches(built: str | None, here: str | None) -> bool:
    """An engine runs only on the TensorRT it was built with: every recorded version component must match."""
    if built is None or here is None:
        return False
    b = [p for p in built.split(".") if p]
    h = here.split(".")
    return len(b) >= 1 and b == h[:len(b)]


def engine_mismatch(name: str, entry: dict[str, Any], avail: Availability) -> str | None:
    """Why the engine cannot run here, or None when it can."""
    sm, trt = engine_target(name, entry)
    if avail.sm is None:
        return f"engine {name!r} needs a CUDA GPU; none is visible here"
    if avail.tensorrt is None:
        return f"engine {name!r} needs TensorRT; `pip install ganrt[gpu]`"
    if sm != avail.sm:
        return (f"engine {name!r} was built for {sm or 'an unknown GPU'}, this GPU ({avail.gpu}) is {avail.sm}; "
                "rebuild it here with `ganrt export --engine`")
    if not trt_version_matches(trt, avail.tensorrt):
        return (f"engine {name!r} was built with TensorRT {trt or 'unknown'}, this machine has TensorRT "
                f"{avail.tensorrt}; rebuild it here with `ganrt export --engine`")
    return None


# -- the pool of runnable variants ----------------------------------------------------------------------
def _onnx_for(artifacts: dict[str, dict], precision: str, *, prefer_rewritten: bool = False) -> str | None:
    names = [f"onnx-{precision}-rw", f"onnx-{precision}"] if prefer_rewritten else [f"onnx-{precision}",
                                                                                    f"onnx-{precision}-rw"]
    # an artifact made for another runtime (onnx-bf16: OpenVINO's bf16 hint) is not onnxruntime's
    return next((n for n in names if n in artifacts and artifacts[n].get("runtime", "onnxruntime") == "onnxruntime"),
                None)


OPENVINO_ARTIFACTS = {
    "fp32": ("onnx-fp32-rw", "onnx-fp32"),  # the rewrite measured faster on OpenVINO (EXPORT-NOTES.md, issue 7)
    "bf16": ("onnx-bf16", "onnx-fp32-rw", "onnx-fp32"),  # bf16 kernels do not cover deconvolution
    "int8": ("openvino-int8",),  # NNCF-quantized IR; onnxruntime's QDQ graph is not for OpenVINO
}


def openvino_artifact(artifacts: dict[str, dict], precision: str) -> str | None:
    """The graph OpenVINO runs for ``precision``: the rewritten graph when the bundle has it (fp32/bf16),
    the graph prepared for bf16, the int8 IR; None when the bundle has none."""
    return next((n for n in OPENVINO_ARTIFACTS.get(precision, ()) if n in artifacts), None)


def _pool(manifest: dict[str, Any], avail: Availability, trust_code: bool = False) -> _Pool:
    artifacts: dict[str, dict] = manifest.get("artifacts") or {}
    pool = _Pool()
    spec = manifest.get("spec") or {}
    torch_ok = spec.get("arch") != "external" or (trust_code and bool(spec.get("factory")))
    if not torch_ok:
        pool.missing.append(
            f"the torch backend rebuilds this user's module by importing its code ({spec['factory']!r}): pass "
            "trust_code=True (CLI: --trust-code) if you trust the bundle's source" if spec.get("factory") else
            "the torch backend cannot rebuild this user's module (its spec names no factory): run its graphs")

    def add(backend, precision, device, artifact, options=()):
        passed = True if artifact == "weights" else artifacts.get(artifact, {}).get("passed")
        pool.choices.append(Choice(backend, precision, device, artifact, tuple(options), passed))

    # tensorrt: one engine per precision that fits this GPU and TensorRT
    engines = {n: a for n, a in artifacts.items() if a.get("kind") == "engine"}
    for precision in GPU_PRECISION_ORDER + ("int8",):
        for name, entry in engines.items():
            if entry.get("precision") == precision:
                why = engine_mismatch(name, entry, avail)
                if why is None:
                    add("tensorrt", precision, "cuda", name)
                    break
                pool.missing.append(why)

    ort_cuda = avail.cuda and ORT_PROVIDERS["cuda"] in avail.ort_providers
    ort_trt = avail.cuda and ORT_PROVIDERS["tensorrt"] in avail.ort_providers
    for precision in GPU_PRECISION_ORDER + ("int8",):
        art = _onnx_for(artifacts, precision)
        if art and ort_cuda:
            add("onnxruntime", precision, "cuda", art, ("cuda",))
        if art and ort_trt:
            add("onnxruntime", precision, "cuda", art, ("trtep",))
    if not ort_cuda and avail.cuda:
        pool.missing.append("onnxruntime CUDA provider is not installed (`pip install onnxruntime-gpu`)")

    if avail.openvino:
        for precision in ("bf16", "fp32", "int8"):
            art = openvino_artifact(artifacts, precision)
            if art:
                if precision == "bf16" and artifacts[art].get("precision") != "bf16":
                    passed = None  # an fp32 graph run with the bf16 hint: no bf16 parity on record
                else:
                    passed = artifacts[art].get("passed")
                pool.choices.append(Choice("openvino", precision, "cpu", art, (), passed))

    if ORT_PROVIDERS["cpu"] in avail.ort_providers:
        for precision in ("fp32", "fp16", "bf16", "int8"):
            art = f"onnx-{precision}"  # the plain graph; onnx-bf16 is made for OpenVINO's bf16 hint
            if art in artifacts and artifacts[art].get("runtime", "onnxruntime") == "onnxruntime":
                add("onnxruntime", precision, "cpu", art)
        if "onnx-fp32-rw" in artifacts:
            add("onnxruntime", "fp32", "cpu", "onnx-fp32-rw", ("rw",))

    if avail.torch and "weights" in artifacts and torch_ok:
        if avail.cuda:
            for precision in GPU_PRECISION_ORDER:
                add("torch", precision, "cuda", "weights", ("cuda",))
        add("torch", "fp32", "cpu", "weights")
    return pool


def _have(manifest: dict[str, Any]) -> list[str]:
    artifacts = manifest.get("artifacts") or {}
    return sorted({a.get("precision") for a in artifacts.values() if a.get("precision")}
                  | ({"fp32"} if "weights" in artifacts else set()))


def _check_request(manifest: dict[str, Any], backend: str, precision: str | None, device: str | None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device is not None and device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose 'cpu' or 'cuda'")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision is not None:
        have = _have(manifest)
        # torch casts its fp32 weights; OpenVINO runs an fp32 graph with the bf16 hint
        runtime_cast = (backend == "torch" and precision in ("fp16", "bf16")) or \
            (backend == "openvino" and precision == "bf16")
        if precision not in have and not runtime_cast:
            raise BundleError(f"the bundle has no {precision} artifact (it has: {', '.join(have) or 'nothing'}); "
                              f"export the bundle with that precision too, or ask for one it has")


def _default_rank(choice: Choice, avail: Availability) -> tuple:
    """Sort key of the default order; smaller is preferred."""
    if choice.backend == "tensorrt":
        tier = 0
    elif choice.backend == "onnxruntime" and choice.device == "cuda":
        tier = 1 if "cuda" in choice.options else 1.5  # the TensorRT EP builds engines at load: explicit only
    elif choice.backend == "openvino" and choice.precision == "bf16":
        tier = 2 if avail.openvino_bf16 else 3.6  # without bf16 support it would fall back to fp32
    elif choice.backend == "onnxruntime":
        tier = 3.1 if "rw" in choice.options else 3
    elif choice.backend == "openvino":
        tier = 3.5
    else:
        tier = 4 if choice.device == "cuda" else 5
    order = GPU_PRECISION_ORDER if choice.device == "cuda" else ("fp32", "bf16", "fp16")
    prec = order.index(choice.precision) if choice.precision in order else len(order)
    return (tier, prec)


def select(manifest: dict[str, Any], available: Availability, *, backend: str = "auto",
           precision: str | None = None, device: str | None = None, provider: str | None = None,
           variant: str | None = None, batch_size: int | None = None, tuning: dict[str, Any] | None = None,
           trust_code: bool = False) -> Choice:
    """The variant to run, with ``reason`` saying why; clear errors when nothing fits.

    ``variant``: one variant by name ("onnxruntime-fp32-rw", "openvino-int8", ...), within the other filters.
    ``batch_size``: the typical request size; auto ranks variants by the timings measured at the batch
    closest to it (None: at the smallest measured batch).
    ``tuning``: this machine's tuning record (ganrt.runtime.tuning.read_tuning), or None.
    ``trust_code``: a user's module may be rebuilt in torch (imports the code its spec names).
    """
    _check_request(manifest, backend, precision, device)
    batch_size = check_batch_hint(batch_size)
    if provider is not None and provider not in ORT_PROVIDERS:
        raise ConfigError(f"unknown onnxruntime provider {provider!r}; choose one of {', '.join(ORT_PROVIDERS)}")
    pool = _pool(manifest, available, trust_code)

    def fits(c: Choice) -> bool:
        if backend != "auto" and c.backend != backend:
            return False
        if precision is not None and c.precision != precision:
            return False
        if device is not None and c.device != device:
            return False
        if provider is not None and (c.backend != "onnxruntime" or c.provider != ORT_PROVIDERS[provider]):
            return False
        if variant is not None and c.variant != variant:
            return False
        return True

    candidates = sorted((c for c in pool.choices if fits(c)), key=lambda c: _default_rank(c, available))
    benchmarked = candidates
    if backend == "auto" and variant is None:
        benchmarked = [c for c in candidates if _auto_ok(c, available, precision, benchmarked=True)]
        candidates = [c for c in candidates if _auto_ok(c, available, precision)]
    if not candidates and not benchmarked:
        raise BackendUnavailable(_nothing_fits(manifest, available, backend, precision, device, pool, variant))

    if backend != "auto" or variant is not None:
        best = candidates[0]
        why = f"{variant or backend} was asked for"
        if best.passed is False:
            why += f"; WARNING: artifact {best.artifact!r} failed parity in the manifest"
        return best.but(reason=why)

    table, where, note = _timings(manifest, available, tuning)
    if table:
        for b in batches_by_closeness(table, batch_size):
            timed = sorted(((ms[b], name) for name, ms in table.items() if b in ms), key=lambda t: t[0])
            for ms, name in timed:
                match = _match_variant(name, benchmarked)
                if match is not None:
                    return match.but(reason=f"fastest variant that passed parity in {where} "
                                            f"({ms:.3g} ms median at batch {b}; {_batch_note(b, batch_size)})")
        note = "; no benchmarked variant that passed parity can run here"
    if not candidates:
        raise BackendUnavailable(_nothing_fits(manifest, available, backend, precision, device, pool, variant))
    best = candidates[0]
    return best.but(reason=f"default order tensorrt > onnxruntime-cuda > openvino-bf16 > onnxruntime-cpu > torch"
                           f"{note}")


# -- benchmarks by batch size ---------------------------------------------------------------------------
def _timings(manifest: dict[str, Any], avail: Availability, tuning: dict[str, Any] | None
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


TORCH_OPTIONS = {"cpu": ("compile",), "cuda": ("compile", "cudagraph")}


def _match_variant(name: str, candidates: list[Choice]) -> Choice | None:
    """The candidate a benchmarked variant name describes; torch variants may add -compile / -cudagraph."""
    for c in candidates:
        if name == c.variant:
            return c
        if c.backend == "torch" and name.startswith(c.variant + "-"):
            extra = tuple(name[len(c.variant) + 1:].split("-"))
            if all(o in TORCH_OPTIONS[c.device] for o in extra):
                return c.but(options=c.options + extra)
    return None


def _auto_ok(c: Choice, avail: Availability, precision: str | None, benchmarked: bool = False) -> bool:
    """auto never picks a variant whose parity failed, nor one with no parity on record (but the reference);
    int8 without a requested precision only when ``benchmarked`` (it measured fastest and passed)."""
    if c.backend == "torch":
        return c.precision == "fp32" or precision is not None
    if c.passed is not True:
        return False
    if c.backend == "openvino" and c.precision == "bf16":
        return avail.openvino_bf16
    if "trtep" in c.options:
        return False  # builds engines on first load (minutes): only when asked for, or benchmarked
    if precision is None and c.precision == "int8":
        return benchmarked
    return True


def _nothing_fits(manifest, avail, backend, precision, device, pool, variant=None) -> str:
    asked = " ".join(x for x in (variant or (backend if backend != "auto" else "any backend"),
                                 precision and f"at {precision}", device and f"on {device}") if x)
    why = []
    if backend in ("tensorrt",) or device == "cuda":
        if not avail.cuda:
            why.append("no CUDA GPU is visible here")
    if backend == "onnxruntime" and not avail.ort_providers:
        why.append("onnxruntime is not installed (`pip install ganrt[cpu]`)")
    if backend == "openvino" and not avail.openvino:
        why.append("OpenVINO is not installed (`pip install ganrt[cpu]`)")
    if backend == "tensorrt" and not any(a.get("kind") == "engine" for a in (manifest.get("artifacts") or {}).values()):
        why.append("the bundle has no TensorRT engine (build one with `ganrt export --engine` on the target GPU)")
    if backend == "torch" and precision in ("fp16", "bf16") and not avail.cuda:
        why.append(f"torch {precision} runs on CUDA only; on this CPU use precision fp32")
    if backend == "torch" and precision == "int8":
        why.append("the torch backend runs fp32 (and fp16/bf16 on CUDA), not int8")
    if backend == "auto":
        why.append("every variant that could run here failed parity or has none on record")
    why += pool.missing
    runnable = ", ".join(sorted({c.variant for c in pool.choices})) or "none"
    return (f"cannot run {asked} for this bundle here: {'; '.join(dict.fromkeys(why)) or 'no matching artifact'}. "
            f"Variants this machine can run from it: {runnable}")
