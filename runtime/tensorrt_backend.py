"""TensorRT backend: the bundle's serialized engine, run with the TensorRT 10/11 tensor API.

An engine is specific to a GPU (compute capability) and a TensorRT version: the backend refuses, with
BackendUnavailable, one built elsewhere (from its manifest entry or its file name
``engines/<precision>.sm<XY>.trt<version>.plan``) before deserializing it. Device buffers are torch
tensors sized for the engine's largest batch; inference is ``set_input_shape`` + ``set_tensor_address``
+ ``execute_async_v3`` on a non-default stream. With ``cuda_graphs`` (default) each batch size gets its
own execution context captured once into a CUDA graph, then replayed; results come back through a
pinned host buffer.

tensorrt and torch.cuda are touched only when this backend is loaded.
"""

from __future__ import annotations

import numpy as np

from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime import machine
from ganrt.runtime.base import Backend, to_uint8_nhwc
from ganrt.runtime.selection import engine_mismatch


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, *, artifact: str, max_batch: int | None = None, cuda_graphs: bool = True,
                 device_id: int = 0) -> None:
        entry = bundle.artifact(artifact)
        if entry.get("kind") != "engine":
            raise BundleError(f"artifact {artifact!r} is a {entry.get('kind')}, not a TensorRT engine")
        why = engine_mismatch(artifact, entry, machine.Availability.probe())
        if why is not None:
            raise BackendUnavailable(why)
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise BackendUnavailable(f"the TensorRT backend needs tensorrt and torch with CUDA ({e}); "
                                     "`pip install ganrt[gpu]`") from None
        self._trt, self._torch = trt, torch
        self._device = torch.device("cuda", device_id)
        torch.cuda.set_device(self._device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(bundle.artifact_path(artifact).read_bytes())
        if self._engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} could not deserialize {entry['file']} (built for "
                                     "another GPU or TensorRT version?); rebuild it with `ganrt export --engine`")

        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if set(self._input_names) != set(bundle.spec.input_names) or len(outputs) != 1:
            raise BundleError(f"engine {entry['file']} has inputs {self._input_names} and outputs {outputs}; "
                              f"the bundle's spec needs inputs {sorted(bundle.spec.input_names)} and one output")
        self._output_name = outputs[0]
        static = int(self._engine.get_tensor_shape("z")[0])  # -1 when the batch axis is dynamic
        engine_max = static if static > 0 else int(self._engine.get_tensor_profile_shape("z", 0)[2][0])
        super().__init__(bundle.spec, precision=entry.get("precision") or "fp32", device="cuda",
                         max_batch=min(max_batch or engine_max, engine_max))
        self._output_format = bundle.graph.get("output_format", "uint8-nhwc")
        self._static_batch = static if static > 0 else None  # such an engine takes only that batch: pad

        # device buffers for the largest batch; smaller batches use a leading slice (same address)
        self._buffers = {}
        self._host = {}
        for name in self._input_names + [self._output_name]:
            dtype = _torch_dtype(torch, trt, self._engine.get_tensor_dtype(name))
            shape = list(self._engine.get_tensor_shape(name))
            shape[0] = self.max_batch
            if any(d < 0 for d in shape[1:]):
                raise BundleError(f"engine {entry['file']}: tensor {name} has dynamic non-batch dims {shape}")
            self._buffers[name] = torch.empty(shape, dtype=dtype, device=self._device)
            self._host[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
        self._stream = torch.cuda.Stream(device=self._device)  # non-default: TensorRT syncs the default one
        self.cuda_graphs = cuda_graphs  # the default way this variant runs: not part of its name
        self._context = None  # eager path: one context, shape set per call
        self._context_batch = None
        self._graphs: dict[int, tuple] = {}  # batch -> (context, CUDAGraph)

    def _new_context(self, batch: int):
        ctx = self._engine.create_execution_context()
        for name in self._input_names:
            ctx.set_input_shape(name, (batch, *self._buffers[name].shape[1:]))
        for name, buf in self._buffers.items():
            ctx.set_tensor_address(name, buf.data_ptr())
        return ctx

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        wanted = feeds["z"].shape[0]
        if self._static_batch and wanted < self._static_batch:
            pad = self._static_batch - wanted
            feeds = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in feeds.items()}
        batch = feeds["z"].shape[0]
        with torch.cuda.stream(self._stream):
            for name in self._input_names:
                host = self._host[name][:batch]
                host.copy_(torch.from_numpy(feeds[name]))  # casts to the engine's input dtype if it differs
                self._buffers[name][:batch].copy_(host, non_blocking=True)
            if self.cuda_graphs:
                if batch not in self._graphs:
                    self._graphs[batch] = self._capture(batch)
                self._graphs[batch][1].replay()
            else:
                if self._context is None:
                    self._context = self._new_context(batch)
                    self._context_batch = batch
                elif self._context_batch != batch:
                    for name in self._input_names:
                        self._context.set_input_shape(name, (batch, *self._buffers[name].shape[1:]))
                    self._context_batch = batch
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            out = self._host[self._output_name][:batch]
            out.copy_(self._buffers[self._output_name][:batch], non_blocking=True)
        self._stream.synchronize()
        images = out.numpy()[:wanted].copy()
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(images, self.spec.output_range)
        return images

    def _capture(self, batch: int):
        torch = self._torch
        ctx = self._new_context(batch)
        # one plain run first: TensorRT applies shape-dependent setup lazily, which must not be captured
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream):
            ctx.execute_async_v3(self._stream.cuda_stream)
        return ctx, graph

    def _close(self) -> None:
        if hasattr(self, "_stream"):
            self._stream.synchronize()
        self._graphs.clear()
        self._context = None
        self._buffers = {}
        self._host = {}
        self._engine = None
        self._runtime = None


def _torch_dtype(torch, trt, dtype):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    for name, tdtype in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdtype
    if dtype not in table:
        raise BundleError(f"engine tensor dtype {dtype} is not supported by the ganrt TensorRT backend")
    return table[dtype]
