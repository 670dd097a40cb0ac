"""onnxruntime backend: the bundle's ONNX graph on the CPU, CUDA or TensorRT execution provider.

- CPU: tuned SessionOptions (intra-op threads = physical cores unless told, sequential execution,
  ORT_ENABLE_ALL graph optimizations, CPU memory arena and memory pattern on).
- CUDA: inputs and outputs bound to device buffers (IO binding); with ``cuda_graphs`` the provider's
  CUDA graph is enabled and each batch size gets its own static buffers and graph id
  (``gpu_graph_id``), so after the first call at a size a request replays one captured graph.
- "onnx-fp32-rw" (the exact ConvTranspose rewrite) runs as the variant "onnxruntime-fp32-rw": it measured
  0.69-0.78x the plain graph's latency on an AVX2 CPU (tools/cpu_fastpath_probe.py), but 1.3-1.6x
  on an AVX-512 one (docs/export-notes.md): the bench decides, and ``auto`` follows the bundle's benchmarks.
- TensorRT EP: engines and timing cache kept inside the bundle (``ort-trt-cache/``; a user cache
  directory when the bundle is read-only), an optimization profile over batch 1..max_batch.
- Threads: ``InferenceSession.run`` is thread-safe and the graph takes any batch (dynamic shapes, no
  per-shape compile), so the CPU and CUDA paths serve concurrent callers as they are (a fresh IO binding
  per CUDA call). Captured CUDA graphs are not: CUDA graph objects must not be replayed from several
  threads at once (onnxruntime's maintainers advise against multithreaded CUDA-graph runs), so that path
  takes a lock, and pads requests to batch buckets so the graphs it keeps are bounded (one per bucket).
  onnxruntime's CUDA provider captures in global mode on a thread's third run of a graph (two regular runs
  first, counted per thread: its graphs live in a per-thread context), so a graph's first
  ``RUNS_TO_CAPTURE`` runs on each thread hold the process-wide capture lock (ganrt.runtime.capture), and
  ``warmup()`` runs each bucket that often, capturing it for the warming thread.

onnxruntime is imported only when this backend is loaded.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from ganrt.artifacts import pick, runs_of
from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.backends import ORT_PROVIDERS as PROVIDERS
from ganrt.runtime.backends import BackendRow, BundleView, Choice, Missing, Probe
from ganrt.runtime.base import Backend, LoadOptions, check_graph_output, dummy_feeds, first_line, to_uint8_nhwc
from ganrt.runtime.capture import CAPTURE_LOCK
from ganrt.runtime.machine import onnxruntime_probe, physical_cores
from ganrt.runtime.pool import ShapeCache

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(double)": np.float64}
TRT_CACHE_DIR = "ort-trt-cache"
# onnxruntime's CUDA provider captures a graph id on a thread once that thread has made 2 regular runs
# (min_num_runs_before_cuda_graph_capture_, cuda_execution_provider.h): by a graph's 3rd run there at most
RUNS_TO_CAPTURE = 3


def probe() -> Probe:
    providers, problem = onnxruntime_probe()
    return Probe({"ort_providers": providers or ()}, problem)


def variants(view: BundleView, avail, row: BackendRow) -> tuple[list[Choice], list[Missing]]:
    """Per precision the table of artifacts (ganrt.artifacts) gives onnxruntime: the CPU, CUDA and TensorRT-EP
    forms of its graph; an artifact-implied form (the rewritten graph, "-rw") on the CPU only."""
    artifacts = view.artifacts
    choices: list[Choice] = []
    missing: list[Missing] = []
    if not avail.ort_providers:
        why = avail.problems.get(row.name) or "onnxruntime is not installed"
        return [], [Missing(row.name, f"{why} (`{row.install}`)")]

    def add(precision, device, artifact, options, rank, auto=True):
        choices.append(Choice(row.name, precision, device, artifact, options, artifacts[artifact].get("passed"),
                              rank=rank, auto=auto))

    cpu = PROVIDERS["cpu"] in avail.ort_providers
    ort_cuda = avail.cuda and PROVIDERS["cuda"] in avail.ort_providers
    ort_trt = avail.cuda and PROVIDERS["tensorrt"] in avail.ort_providers
    for precision, implied in runs_of(row.name):
        art = pick(artifacts, row.name, precision, implied)
        if art is None:
            continue
        if implied:  # the ConvTranspose rewrite is a CPU optimization
            if cpu:
                add(precision, "cpu", art, implied, row.rank + 2.1)
            continue
        if ort_cuda:
            add(precision, "cuda", art, ("cuda",), row.rank)
        if ort_trt:  # the TensorRT EP builds engines at load (minutes): only when asked for
            add(precision, "cuda", art, ("trtep",), row.rank + 0.5, auto=False)
        if cpu:
            add(precision, "cpu", art, (), row.rank + 2)
    if avail.cuda and not ort_cuda:
        missing.append(Missing(row.name, "onnxruntime CUDA provider is not installed (`pip install onnxruntime-gpu`)",
                               device="cuda"))
    return choices, missing


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, choice: Choice, options: LoadOptions = LoadOptions(), *,
                 cache_dir: str | os.PathLike | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: `pip install ganrt[cpu]` "
                                     "(or ganrt[gpu] for CUDA/TensorRT)") from None
        provider = "tensorrt" if "trtep" in choice.options else choice.device
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise BackendUnavailable(f"onnxruntime's {PROVIDERS[provider]} is not available here (this onnxruntime "
                                     f"has {', '.join(ort.get_available_providers())}); for GPUs install "
                                     "onnxruntime-gpu instead of onnxruntime")
        cuda_graphs = True if options.cuda_graphs is None else options.cuda_graphs
        super().__init__(bundle.spec, precision=choice.precision, device=choice.device,
                         max_batch=options.max_batch or int(bundle.graph.get("max_batch") or 64),
                         option="-".join(choice.options) or None, provider=PROVIDERS[provider],
                         artifact=choice.artifact, concurrency=options.concurrency or 1)
        self._ort = ort
        self._device_id = int(options.device_id)
        self._output_format = bundle.graph.get("output_format", "uint8-nhwc")
        self._path = bundle.artifact_path(choice.artifact)
        self.threads = int(options.threads) if options.threads else physical_cores()
        self.cuda_graphs = bool(cuda_graphs) and provider == "cuda"
        self.static_shapes = self.cuda_graphs  # one captured graph per batch bucket
        self.note = ""

        session_options = self._session_options()
        if provider == "cpu":
            providers = [PROVIDERS["cpu"]]
        elif provider == "cuda":
            providers = [(PROVIDERS["cuda"], self._cuda_options(self.cuda_graphs)), PROVIDERS["cpu"]]
        else:
            providers = [(PROVIDERS["tensorrt"], self._trt_options(bundle, cache_dir)),
                         (PROVIDERS["cuda"], self._cuda_options(False)), PROVIDERS["cpu"]]
        try:
            self._session = ort.InferenceSession(str(self._path), sess_options=session_options, providers=providers)
        except Exception as e:
            if not self.cuda_graphs:
                raise BackendUnavailable(f"onnxruntime cannot load {self._path.name} on {PROVIDERS[provider]}: "
                                         f"{first_line(e)}") from None
            # CUDA graphs need every node on the CUDA provider; run without them rather than fail
            self.cuda_graphs = self.static_shapes = False
            self.note = f"CUDA graphs off ({first_line(e)})"
            providers[0] = (PROVIDERS["cuda"], self._cuda_options(False))
            try:
                self._session = ort.InferenceSession(str(self._path), sess_options=session_options,
                                                     providers=providers)
            except Exception as e2:
                raise BackendUnavailable(f"onnxruntime cannot load {self._path.name} on {PROVIDERS[provider]}: "
                                         f"{first_line(e2)}") from None
        active = self._session.get_providers()
        if active[0] != PROVIDERS[provider]:
            raise BackendUnavailable(f"onnxruntime fell back to {active[0]} instead of {PROVIDERS[provider]} "
                                     "(CUDA/cuDNN/TensorRT libraries missing or mismatched?)")

        self._inputs = {i.name: ORT_DTYPES.get(i.type, np.float32) for i in self._session.get_inputs()}
        if set(self._inputs) != set(self.spec.input_names):
            raise BundleError(f"{self._path.name} takes inputs {sorted(self._inputs)}, but the bundle's spec needs "
                              f"{sorted(self.spec.input_names)}; re-export the bundle")
        outputs = self._session.get_outputs()
        if len(outputs) != 1:
            raise BundleError(f"artifact {choice.artifact!r} has {len(outputs)} outputs, the bundle's graphs have one")
        self._output = outputs[0].name
        out_type = outputs[0].type
        check_graph_output(choice.artifact, self.spec, self._output_format, ORT_DTYPES.get(out_type, out_type),
                           list(outputs[0].shape)[1:])
        # CUDA graphs: one captured graph (static buffers + graph id) per batch bucket, replayed under a lock
        self._graph_lock = threading.Lock()
        self._bound: ShapeCache[int, _BoundBatch] = ShapeCache(self._bind, maxsize=len(self.buckets))

    # -- configuration --------------------------------------------------------------------------------
    def _session_options(self):
        ort = self._ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a generator is one chain: no inter-op parallelism
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.enable_cpu_mem_arena = True
        so.enable_mem_pattern = True  # reuses the previous run's allocation plan for the same shapes
        so.log_severity_level = 3  # errors only: the TensorRT/CUDA providers are chatty
        return so

    def _cuda_options(self, cuda_graphs: bool) -> dict:
        return {"device_id": str(self._device_id), "enable_cuda_graph": "1" if cuda_graphs else "0",
                "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": "1"}

    def _trt_options(self, bundle: Bundle, cache_dir) -> dict:
        cache = Path(cache_dir) if cache_dir else trt_cache_dir(bundle)
        cache.mkdir(parents=True, exist_ok=True)
        shapes = {}
        for size in ("min", "opt", "max"):
            b = {"min": 1, "opt": min(8, self.max_batch), "max": self.max_batch}[size]
            parts = [f"z:{b}x{self.spec.latent_dim}"]
            if self.spec.conditional:
                parts.append(f"labels:{b}")
            if self.spec.has_truncation:
                parts.append(f"truncation:{b}")
            shapes[f"trt_profile_{size}_shapes"] = ",".join(parts)
        self.cache_dir = cache
        return {"device_id": str(self._device_id), "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache), **shapes}

    # -- running --------------------------------------------------------------------------------------
    def _cast(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: feeds[k].astype(dtype, copy=False) for k, dtype in self._inputs.items()}

    def _finish(self, out: np.ndarray) -> np.ndarray:
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(out, self.spec.output_range)
        return out

    def _bind(self, batch: int) -> "_BoundBatch":
        return _BoundBatch(self, batch, graph_id=self.buckets.index(batch) + 1)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        feeds = self._cast(feeds)
        if self.device == "cpu":
            return self._finish(self._session.run([self._output], feeds)[0])
        if self.cuda_graphs:
            bound = self._bound.get(feeds["z"].shape[0])
            with self._graph_lock:
                return self._finish(bound.run(feeds))
        ort = self._ort
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", self._device_id))
        binding.bind_output(self._output, "cuda", self._device_id)
        self._session.run_with_iobinding(binding)
        return self._finish(binding.get_outputs()[0].numpy())

    def _warm(self, batch: int) -> None:
        for _ in range(RUNS_TO_CAPTURE if self.cuda_graphs else 1):  # up to the capture, on this thread
            self._run(dummy_feeds(self.spec, batch))

    def _close(self) -> None:
        self._bound.clear()
        self._session = None


class _BoundBatch:
    """Static device buffers and an IO binding for one batch size, replayed as CUDA graph ``graph_id``."""

    def __init__(self, backend: OnnxRuntimeBackend, b: int, graph_id: int) -> None:
        ort = backend._ort
        dev = backend._device_id
        self.session = backend._session
        feeds = backend._cast(dummy_feeds(backend.spec, b))
        self.inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", dev) for k, v in feeds.items()}
        out_meta = self.session.get_outputs()[0]
        spec = backend.spec
        if backend._output_format == "float-nchw":
            shape, dtype = (b, spec.channels, spec.height, spec.width), np.float32
        else:
            shape, dtype = (b, spec.height, spec.width, spec.channels), np.uint8
        self.output = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", dev)
        self.binding = self.session.io_binding()
        for k, v in self.inputs.items():
            self.binding.bind_ortvalue_input(k, v)
        self.binding.bind_ortvalue_output(out_meta.name, self.output)
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))  # one captured graph per size
        self._runs = threading.local()  # this graph's runs on each thread, up to RUNS_TO_CAPTURE

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for k, v in feeds.items():
            self.inputs[k].update_inplace(v)  # same device address: the captured graph reads it
        runs = getattr(self._runs, "n", 0)
        if runs < RUNS_TO_CAPTURE:  # this run may capture (or allocate before a capture) in global mode
            with CAPTURE_LOCK:
                self.session.run_with_iobinding(self.binding, self.run_options)
            self._runs.n = runs + 1
        else:
            self.session.run_with_iobinding(self.binding, self.run_options)
        return self.output.numpy()


def trt_cache_dir(bundle: Bundle) -> Path:
    """The TensorRT EP's engine/timing cache: inside the bundle, or a user cache dir if it is read-only."""
    inside = bundle.path / TRT_CACHE_DIR
    if os.access(bundle.path, os.W_OK):
        check_cache_dir(inside)
        return inside
    key = hashlib.sha256(str(bundle.path.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ganrt" / "ort-trt" / key


def check_cache_dir(cache: Path) -> None:
    """The TensorRT EP opens and writes its engine and timing caches in ``cache`` itself, following links: a
    folder shipped in a bundle must hold nothing it could write through to another file (a symlink, a hard
    link, a FIFO or device). BundleError naming the entry otherwise."""
    if cache.is_symlink() or (cache.exists() and not cache.is_dir()):
        raise BundleError(f"{cache} is a symlink or not a folder; onnxruntime's TensorRT cache would be written "
                          "through it: remove it (the cache is rebuilt)")
    if not cache.exists():
        return
    for entry in os.scandir(cache):
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False) or st.st_nlink > 1:
            raise BundleError(f"{entry.path} is a symlink, a hard link or not a regular file; onnxruntime's "
                              "TensorRT cache would be written through it: remove it (the cache is rebuilt)")
