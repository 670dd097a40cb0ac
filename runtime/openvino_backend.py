"""OpenVINO backend: the bundle's ONNX graph (or int8 IR) on OpenVINO's CPU plugin: fp32, bf16 or int8.

- Precision is always set explicitly (INFERENCE_PRECISION_HINT): OpenVINO's default on a bf16-capable
  CPU is bf16, so an fp32 deployment that leaves it unset silently runs bf16. bf16 on a CPU without
  bf16 support (no 'BF16' in the CPU's OPTIMIZATION_CAPABILITIES) falls back to fp32 with a warning.
- For bf16 it reads the graph prepared for bf16 ('onnx-bf16') when the bundle has one, else the
  ConvTranspose-rewritten fp32 graph ('onnx-fp32-rw': OpenVINO's bf16 kernels do not cover
  deconvolution), else 'onnx-fp32' (selection.openvino_artifact picks it). fp32 runs 'onnx-fp32-rw' when
  the bundle has it (measured faster), int8 the NNCF-quantized IR 'openvino-int8' (its non-quantized
  ops in f32).
- Static shapes compile faster kernels than a dynamic batch, so a compiled model is cached per batch
  shape and hint (a small LRU). Batches below ``throughput_batch`` use the LATENCY hint; larger ones
  use THROUGHPUT with one stream per physical core (up to 4), the batch split across streams and run
  as concurrent infer requests.

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
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable("OpenVINO is not installed: `pip install ganrt[cpu]`") from None
        if precision not in OV_PRECISION:
            raise BackendUnavailable(f"the OpenVINO backend runs fp32, bf16 or int8 (the openvino-int8 IR), not "
                                     f"{precision}; use backend='onnxruntime' for fp16 artifacts")
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
        path = bundle.artifact_path(artifact)
        try:
            self._model = self._core.read_model(str(path))
        except Exception as e:
            raise BundleError(f"OpenVINO cannot read {path.name}: {str(e).strip().splitlines()[0]}") from None
        self._inputs = {port.get_any_name(): port for port in self._model.inputs}
        expected = {"z"} | ({"labels"} if self.spec.conditional else set()) | \
            ({"truncation"} if self.spec.has_truncation else set())
        if set(self._inputs) != expected:
            raise BundleError(f"{path.name} takes inputs {sorted(self._inputs)}, but the bundle's spec needs "
                              f"{sorted(expected)}; re-export the bundle")
        self.threads = int(threads) if threads else None
        self.throughput_batch = int(throughput_batch)
        self.streams = int(streams) if streams else min(4, physical_cores())
        self._compiled: OrderedDict[tuple[int, str], tuple] = OrderedDict()

    def _compile(self, batch: int, hint: str):
        """(compiled model, infer requests) for a static batch shape and performance hint, LRU-cached."""
        key = (batch, hint)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        model = self._model.clone()
        model.reshape({name: [batch, *list(port.get_partial_shape())[1:]] for name, port in self._inputs.items()})
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[self.precision], "PERFORMANCE_HINT": hint}
        if hint == "THROUGHPUT":
            config["NUM_STREAMS"] = str(self.streams)
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        compiled = self._core.compile_model(model, "CPU", config)
        n = self.streams if hint == "THROUGHPUT" else 1
        entry = (compiled, [compiled.create_infer_request() for _ in range(n)])
        self._compiled[key] = entry
        if len(self._compiled) > CACHE_SIZE:
            self._compiled.popitem(last=False)
        return entry

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        batch = feeds["z"].shape[0]
        if batch < self.throughput_batch or self.streams < 2:
            _, (request,) = self._compile(batch, "LATENCY")
            request.infer(feeds)
            return self._finish(request.get_output_tensor(0).data.copy())
        # split as evenly as possible across streams: at most two chunk shapes
        n = min(self.streams, batch)
        bounds = [(i * batch // n, (i + 1) * batch // n) for i in range(n)]
        running = []
        for k, (lo, hi) in enumerate(bounds):
            _, requests = self._compile(hi - lo, "THROUGHPUT")
            request = requests[k % len(requests)]
            request.start_async({name: v[lo:hi] for name, v in feeds.items()})
            running.append(request)
        outs = []
        for request in running:
            request.wait()
            outs.append(request.get_output_tensor(0).data.copy())
        return self._finish(np.concatenate(outs, axis=0))

    def _finish(self, out: np.ndarray) -> np.ndarray:
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(out, self.spec.output_range)
        return np.ascontiguousarray(out, dtype=np.uint8)

    def _close(self) -> None:
        self._compiled.clear()
        self._model = None
