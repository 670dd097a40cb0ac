"""OpenVINO backend: the bundle's ONNX graph (or int8 IR) on OpenVINO's CPU plugin: fp32, bf16 or int8.

- Precision is always set explicitly (INFERENCE_PRECISION_HINT): OpenVINO's default on a bf16-capable
  CPU is bf16, so an fp32 deployment that leaves it unset silently runs bf16. bf16 on a CPU without
  bf16 support (no 'BF16' in the CPU's OPTIMIZATION_CAPABILITIES) falls back to fp32 with a warning.
- Which artifact runs each precision is the table of artifacts' fact (ganrt.artifacts): for bf16 the graph
  prepared for bf16 ('onnx-bf16') when the bundle has one, else the ConvTranspose-rewritten fp32 graph
  ('onnx-fp32-rw': OpenVINO's bf16 kernels do not cover deconvolution), else 'onnx-fp32'; fp32 runs
  'onnx-fp32-rw' when the bundle has it (measured faster), int8 the NNCF-quantized IR 'openvino-int8' (its
  non-quantized ops in f32).
- The int8 IR may come with a small-batch graph (``small_batch_graph`` in its manifest entry: the same
  quantization on the single-form ConvTranspose rewrite, fewer and larger convolutions), which runs the
  batches up to its ``max_batch``; export links it only when it drew exactly the main graph's images on
  every verified batch, so a seed's image does not depend on the batch it is drawn in.
- Static shapes compile faster kernels than a dynamic batch, so a model is compiled per batch bucket
  (1, 2, 3 when a small-batch graph serves them, 4, 8, ..., max_batch; a request is padded up to its bucket
  and sliced), each compiled model kept once (``ShapeCache``, bounded by the number of buckets) and compiled
  ahead by ``warmup()``: cycling request sizes never recompiles. Before buckets, an LRU of 8 shapes made
  batch sizes 1..24 in turn recompile on every call (~85x a warm call).
- Threads: an infer request serves one caller at a time, so each compiled model has a ``SlotPool`` of
  ``concurrency`` requests, each with its own input and output buffers bound once
  (``ov.Tensor(..., shared_memory=True)``): a call takes a free request, copies the feeds into its buffers,
  runs and copies the result out (measured 62 us against 78 us per batch-1 call of the demo generator's
  int8 IR with ``infer(feeds, share_inputs=True, share_outputs=True)``). One shared request per shape raced:
  "Infer Request is busy" and silently wrong images under 8 threads.
- Hints: the LATENCY hint, with TBB's static partitioner where this OpenVINO has the property
  (measured on the demo generator, 2-core AVX-512 CPU: 80 us against 104 us at batch 1, int8). Batches
  of ``throughput_batch`` or more are split across ``streams`` THROUGHPUT streams run as concurrent infer
  requests only with at least 4 threads (2 or more threads per stream): on 2 cores the
  split was slower than one LATENCY request at batch 8 and 64 (int8 1.54 ms against 1.26 ms at batch 64).

openvino is imported only when this backend is loaded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ganrt.artifacts import pick
from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.backends import BackendRow, BundleView, Choice, Missing, Probe
from ganrt.runtime.base import Backend, LoadOptions, check_graph_output, dummy_feeds, first_line, to_uint8_nhwc
from ganrt.runtime.machine import openvino_probe, physical_cores
from ganrt.runtime.pool import ShapeCache, SlotPool

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the IR's own quantization; the rest f32


def probe() -> Probe:
    caps, problem = openvino_probe()
    return Probe({"openvino": caps is not None, "openvino_bf16": bool(caps) and "BF16" in caps}, problem)


def variants(view: BundleView, avail, row: BackendRow) -> tuple[list[Choice], list[Missing]]:
    """One variant per precision OpenVINO runs, on the artifact the table of artifacts (ganrt.artifacts) prefers."""
    artifacts = view.artifacts
    if not avail.openvino:
        why = avail.problems.get(row.name) or "OpenVINO is not installed"
        return [], [Missing(row.name, f"{why} (`{row.install}`)")]
    choices = []
    for precision in ("bf16", "fp32", "int8"):
        art = pick(artifacts, row.name, precision)
        if not art:
            continue
        passed = artifacts[art].get("passed")
        rank, auto = row.rank, True
        if precision == "bf16":
            # without bf16 hardware it would run fp32, and an fp32 graph under the bf16 hint was not exported
            # as bf16: never auto's pick (export may still verify it; by name it runs)
            as_bf16 = artifacts[art].get("precision") == "bf16"
            passed = passed if as_bf16 else None
            rank, auto = (row.rank - 1.5, as_bf16) if avail.openvino_bf16 else (row.rank + 0.1, False)
        choices.append(Choice(row.name, precision, "cpu", art, (), passed, rank=rank, auto=auto))
    return choices, []


def input_name(port, wanted) -> str:
    """The graph input name (one of ``wanted``) an OpenVINO port carries. A port has a set of tensor names, and
    after a compile may report another one first: the ConvTranspose rewrite of a 1x1 first layer reshapes ``z``
    to what it already is, OpenVINO folds that Reshape into the input and its output's name
    ("node_ConvTranspose_53_rw_flat") joins z's."""
    names = port.get_names()
    return next((n for n in wanted if n in names), port.get_any_name())


class OpenVINOBackend(Backend):
    name = "openvino"
    static_shapes = True

    def __init__(self, bundle: Bundle, choice: Choice, options: LoadOptions = LoadOptions(), *,
                 throughput_batch: int = 16, streams: int | None = None) -> None:
        """``streams``: THROUGHPUT streams for batches of ``throughput_batch`` or more (default: one per two
        threads, up to 4; fewer than 2 means every batch runs as one LATENCY request)."""
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable("OpenVINO is not installed: `pip install ganrt[cpu]`") from None
        precision = choice.precision
        if precision not in OV_PRECISION:
            raise BackendUnavailable(f"the OpenVINO backend runs fp32, bf16 or int8 (the openvino-int8 IR), not "
                                     f"{precision}; use backend='onnxruntime' for fp16 artifacts")
        self._ov = ov
        self._core = ov.Core()
        self.note = ""
        caps = [str(c) for c in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        if precision == "bf16" and "BF16" not in caps:
            self.note = (f"this CPU has no bf16 support (OpenVINO CPU capabilities: {', '.join(caps)}); "
                         "running fp32 instead")
            warnings.warn(f"ganrt: {self.note}", RuntimeWarning, stacklevel=4)
            precision = "fp32"
        artifact = choice.artifact
        self._output_format = bundle.graph.get("output_format", "uint8-nhwc")
        # a second graph for small batches (the int8 IR's single-form rewrite), when the bundle has one that passed
        small = bundle.artifacts.get(artifact, {}).get("small_batch_graph") or {}
        self.small_artifact, self.small_batch_max = None, 0
        if bundle.artifacts.get(small.get("artifact"), {}).get("passed") is True:
            self.small_artifact, self.small_batch_max = small["artifact"], int(small.get("max_batch") or 0)
        threads = int(options.threads) if options.threads else None
        super().__init__(bundle.spec, precision=precision, device="cpu",
                         max_batch=options.max_batch or int(bundle.graph.get("max_batch") or 64), artifact=artifact,
                         concurrency=options.concurrency or threads or physical_cores(),
                         exact_batches=tuple(range(1, self.small_batch_max + 1)))
        self._model = self._read(bundle, artifact)
        self._small_model = self._read(bundle, self.small_artifact) if self.small_artifact else None
        self._inputs = {input_name(port, self.spec.input_names): port for port in self._model.inputs}
        self.threads = threads
        self.throughput_batch = int(throughput_batch)
        self.streams = int(streams) if streams else min(4, (self.threads or physical_cores()) // 2)
        self._static_partitioner = "TBB_PARTITIONER" in self._core.get_property("CPU", "SUPPORTED_PROPERTIES")
        # one entry per batch bucket (each bucket runs under exactly one hint): never evicted in use
        self._compiled: ShapeCache[int, _Compiled] = ShapeCache(self._compile_batch, maxsize=len(self.buckets))

    def _read(self, bundle: Bundle, artifact: str):
        path = bundle.artifact_path(artifact)
        try:
            model = self._core.read_model(str(path))
        except Exception as e:
            raise BundleError(f"OpenVINO cannot read {path.name}: {first_line(e)}") from None
        names = {input_name(port, self.spec.input_names) for port in model.inputs}
        if names != set(self.spec.input_names):
            raise BundleError(f"{path.name} takes inputs {sorted(names)}, but the bundle's spec needs "
                              f"{sorted(self.spec.input_names)}; re-export the bundle")
        if len(model.outputs) != 1:
            raise BundleError(f"artifact {artifact!r} has {len(model.outputs)} outputs, the bundle's graphs have one")
        out = model.outputs[0]
        shape = [d.get_length() if d.is_static else None for d in out.get_partial_shape()]
        check_graph_output(artifact, self.spec, self._output_format, out.get_element_type().to_dtype(), shape[1:])
        return model

    def _hint(self, batch: int) -> str:
        return "LATENCY" if batch < self.throughput_batch or self.streams < 2 else "THROUGHPUT"

    def _compile(self, batch: int, hint: str):
        """A model compiled for one static batch and hint."""
        small = hint == "LATENCY" and batch <= self.small_batch_max
        model = (self._small_model if small else self._model).clone()
        model.reshape({name: [batch, *list(port.get_partial_shape())[1:]] for name, port in self._inputs.items()})
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[self.precision], "PERFORMANCE_HINT": hint}
        if hint == "THROUGHPUT":
            config["NUM_STREAMS"] = str(self.streams)
        elif self._static_partitioner:
            config["TBB_PARTITIONER"] = "STATIC"
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        return self._core.compile_model(model, "CPU", config)

    def _compile_batch(self, batch: int) -> "_Compiled":
        """The compiled model(s) of one batch bucket and a pool of request groups to run them."""
        hint = self._hint(batch)
        if hint == "LATENCY":
            bounds = [(0, batch)]
        else:  # split as evenly as possible across streams: at most two chunk shapes
            n = min(self.streams, batch)
            bounds = [(i * batch // n, (i + 1) * batch // n) for i in range(n)]
        models = {size: self._compile(size, hint) for size in {hi - lo for lo, hi in bounds}}
        ov = self._ov

        def group() -> list[_Bound]:
            return [_Bound(ov, models[hi - lo], self.spec.input_names) for lo, hi in bounds]

        return _Compiled(hint, bounds, models, SlotPool(group, self.concurrency))

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        entry = self._compiled.get(feeds["z"].shape[0])
        with entry.pool.slot() as group:
            return self._finish(entry.run(group, feeds))

    def _warm(self, batch: int) -> None:
        """Compile the bucket and make (and run once) every request of its pool."""
        entry = self._compiled.get(batch)
        feeds = dummy_feeds(self.spec, batch)
        with entry.pool.all() as groups:
            for group in groups:
                entry.run(group, feeds)

    def _finish(self, out: np.ndarray) -> np.ndarray:
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(out, self.spec.output_range)
        return out

    @property
    def compiles(self) -> int:
        """How many batch buckets were compiled so far (a warmed-up backend compiles no more)."""
        return self._compiled.builds

    def _close(self) -> None:
        self._compiled.clear()
        self._model = self._small_model = None


@dataclass
class _Compiled:
    hint: str
    bounds: list[tuple[int, int]]  # the rows each request of a group runs (one chunk per stream)
    models: dict[int, object]  # chunk size -> compiled model
    pool: SlotPool

    def run(self, group: list["_Bound"], feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch on a group of requests held by this caller; a fresh array of the images."""
        if len(group) == 1:
            (bound,) = group
            bound.load(feeds)
            bound.request.infer(share_outputs=True)  # the result lands in bound.output
            return bound.output.copy()
        for bound, (lo, hi) in zip(group, self.bounds, strict=True):
            bound.load({name: v[lo:hi] for name, v in feeds.items()})
            bound.request.start_async()
        for bound in group:
            bound.request.wait()
        return np.concatenate([bound.output for bound in group], axis=0)


class _Bound:
    """One infer request with numpy buffers bound as its input and output tensors (shared memory)."""

    def __init__(self, ov, compiled, names: list[str]) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = {}
        for port in compiled.inputs:
            buf = np.zeros(list(port.get_shape()), dtype=port.get_element_type().to_dtype())
            self.request.set_tensor(port, ov.Tensor(buf, shared_memory=True))
            self.inputs[input_name(port, names)] = buf
        out = compiled.outputs[0]
        self.output = np.zeros(list(out.get_shape()), dtype=out.get_element_type().to_dtype())
        self.request.set_output_tensor(0, ov.Tensor(self.output, shared_memory=True))

    def load(self, feeds: dict[str, np.ndarray]) -> None:
        """Copy the feeds into the bound input buffers (int64 labels into an i32 port where OpenVINO made one)."""
        for name, buf in self.inputs.items():
            np.copyto(buf, feeds[name], casting="same_kind")
