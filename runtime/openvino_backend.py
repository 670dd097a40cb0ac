"""OpenVINO backend: the bundle's ONNX graph (or int8 IR) on OpenVINO's CPU plugin: fp32, bf16 or int8.

- Precision is always set explicitly (INFERENCE_PRECISION_HINT): OpenVINO's default on a bf16-capable
  CPU is bf16, so an fp32 deployment that leaves it unset silently runs bf16. bf16 on a CPU without
  bf16 support (no 'BF16' in the CPU's OPTIMIZATION_CAPABILITIES) falls back to fp32 with a warning.
- For bf16 it reads the graph prepared for bf16 ('onnx-bf16') when the bundle has one, else the
  ConvTranspose-rewritten fp32 graph ('onnx-fp32-rw': OpenVINO's bf16 kernels do not cover
  deconvolution), else 'onnx-fp32' (selection.openvino_artifact picks it). fp32 runs 'onnx-fp32-rw' when
  the bundle has it (measured faster), int8 the NNCF-quantized IR 'openvino-int8' (its non-quantized
  ops in f32).
- The int8 IR may come with a small-batch graph (``small_batch_graph`` in its manifest entry: the same
  quantization on the single-form ConvTranspose rewrite, fewer and larger convolutions), which runs the
  batches up to its ``max_batch``; export links it only when it drew exactly the main graph's images on
  every verified batch, so a seed's image does not depend on the batch it is drawn in.
- Static shapes compile faster kernels than a dynamic batch, so a compiled model is cached per batch
  shape and hint (a small LRU), each infer request with its own input and output buffers bound once
  (``ov.Tensor(..., shared_memory=True)``): a call copies the feeds into them and runs, with no per-call
  tensor wrapping or result dictionary (measured 62 us against 78 us per batch-1 call of the demo
  generator's int8 IR with ``infer(feeds, share_inputs=True, share_outputs=True)``).
- Hints: the LATENCY hint, with TBB's static partitioner where this OpenVINO has the property
  (measured on the demo generator, 2-core AVX-512 CPU: 80 us against 104 us at batch 1, int8). Batches
  of ``throughput_batch`` or more are split across ``streams`` THROUGHPUT streams run as concurrent infer
  requests only with at least 4 threads (2 or more threads per stream): on 2 cores the
  split was slower than one LATENCY request at batch 8 and 64 (int8 1.54 ms against 1.26 ms at batch 64).

openvino is imported only when this backend is loaded.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np

from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.base import Backend, to_uint8_nhwc
from ganrt.runtime.machine import physical_cores

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the IR's own quantization; the rest f32
CACHE_SIZE = 8


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, bundle: Bundle, *, artifact: str, precision: str = "fp32", max_batch: int | None = None,
                 threads: int | None = None, throughput_batch: int = 16, streams: int | None = None) -> None:
        """``streams``: THROUGHPUT streams for batches of ``throughput_batch`` or more (default: one per two
        threads, up to 4; fewer than 2 means every batch runs as one LATENCY request)."""
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable("OpenVINO is not installed: `pip install ganrt[cpu]`") from None
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
            warnings.warn(f"ganrt: {self.note}", RuntimeWarning, stacklevel=3)
            precision = "fp32"
        super().__init__(bundle.spec, precision=precision, device="cpu",
                         max_batch=max_batch or int(bundle.graph.get("max_batch") or 64))
        self.artifact = artifact
        self._output_format = bundle.graph.get("output_format", "uint8-nhwc")
        self._model = self._read(bundle, artifact)
        self._small_model = None
        self._inputs = {port.get_any_name(): port for port in self._model.inputs}
        # a second graph for small batches (the int8 IR's single-form rewrite), when the bundle has one that passed
        small = bundle.artifacts.get(artifact, {}).get("small_batch_graph") or {}
        self.small_artifact, self.small_batch_max = None, 0
        if bundle.artifacts.get(small.get("artifact"), {}).get("passed") is True:
            self._small_model = self._read(bundle, small["artifact"])
            self.small_artifact, self.small_batch_max = small["artifact"], int(small.get("max_batch") or 0)
        self.threads = int(threads) if threads else None
        self.throughput_batch = int(throughput_batch)
        self.streams = int(streams) if streams else min(4, (self.threads or physical_cores()) // 2)
        self._static_partitioner = "TBB_PARTITIONER" in self._core.get_property("CPU", "SUPPORTED_PROPERTIES")
        self._compiled: OrderedDict[tuple[int, str], list[_Bound]] = OrderedDict()

    def _read(self, bundle: Bundle, artifact: str):
        path = bundle.artifact_path(artifact)
        try:
            model = self._core.read_model(str(path))
        except Exception as e:
            raise BundleError(f"OpenVINO cannot read {path.name}: {str(e).strip().splitlines()[0]}") from None
        names = {port.get_any_name() for port in model.inputs}
        if names != set(self.spec.input_names):
            raise BundleError(f"{path.name} takes inputs {sorted(names)}, but the bundle's spec needs "
                              f"{sorted(self.spec.input_names)}; re-export the bundle")
        return model

    def _compile(self, batch: int, hint: str) -> list["_Bound"]:
        """Infer requests (inputs/outputs bound) of a model compiled for one static batch and hint, LRU-cached."""
        key = (batch, hint)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
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
        compiled = self._core.compile_model(model, "CPU", config)
        n = self.streams if hint == "THROUGHPUT" else 1
        entry = [_Bound(self._ov, compiled) for _ in range(n)]
        self._compiled[key] = entry
        if len(self._compiled) > CACHE_SIZE:
            self._compiled.popitem(last=False)
        return entry

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        batch = feeds["z"].shape[0]
        if batch < self.throughput_batch or self.streams < 2:
            (bound,) = self._compile(batch, "LATENCY")
            bound.load(feeds)
            bound.request.infer(share_outputs=True)  # the result lands in bound.output
            return self._finish(bound.output.copy())
        # split as evenly as possible across streams: at most two chunk shapes
        n = min(self.streams, batch)
        bounds = [(i * batch // n, (i + 1) * batch // n) for i in range(n)]
        running = []
        for k, (lo, hi) in enumerate(bounds):
            bound = self._compile(hi - lo, "THROUGHPUT")[k]
            bound.load({name: v[lo:hi] for name, v in feeds.items()})
            bound.request.start_async()
            running.append(bound)
        outs = []
        for bound in running:
            bound.request.wait()
            outs.append(bound.output.copy())
        return self._finish(np.concatenate(outs, axis=0))

    def _finish(self, out: np.ndarray) -> np.ndarray:
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(out, self.spec.output_range)
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _close(self) -> None:
        self._compiled.clear()
        self._model = self._small_model = None


class _Bound:
    """One infer request with numpy buffers bound as its input and output tensors (shared memory)."""

    def __init__(self, ov, compiled) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = {}
        for port in compiled.inputs:
            buf = np.zeros(list(port.get_shape()), dtype=port.get_element_type().to_dtype())
            self.request.set_tensor(port.get_any_name(), ov.Tensor(buf, shared_memory=True))
            self.inputs[port.get_any_name()] = buf
        out = compiled.outputs[0]
        self.output = np.zeros(list(out.get_shape()), dtype=out.get_element_type().to_dtype())
        self.request.set_output_tensor(0, ov.Tensor(self.output, shared_memory=True))

    def load(self, feeds: dict[str, np.ndarray]) -> None:
        """Copy the feeds into the bound input buffers (int64 labels into an i32 port where OpenVINO made one)."""
        for name, buf in self.inputs.items():
            np.copyto(buf, feeds[name], casting="same_kind")
