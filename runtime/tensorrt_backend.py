"""TensorRT backend: the bundle's serialized engine, run with the TensorRT 10/11 tensor API.

An engine is specific to a GPU (compute capability) and a TensorRT build: the backend refuses, with
BackendUnavailable, one built elsewhere (from its manifest entry or its file name
``engines/<precision>.sm<XY>.trt<version>.plan``), checked against the GPU it runs on (``device_id``),
before deserializing it; an engine built without a hardware-compatibility level on another GPU model of the
same compute capability loads with a note in the generator's ``reason``. Inference is ``set_input_shape``
+ ``set_tensor_address`` + ``execute_async_v3`` on a non-default stream, every TensorRT call under the
backend's device, whichever thread makes it.

Threads: an execution context, its device buffers and a CUDA graph captured from it serve one caller at a
time, so the backend keeps a ``SlotPool`` of ``concurrency`` slots, each with its own stream, device and
pinned host buffers (sized for the largest batch), one activation buffer shared by all of its contexts
(``ExecutionContextAllocationStrategy.USER_MANAGED`` + ``set_device_memory``: a slot's contexts run one after
another on its stream, so one buffer of ``device_memory_size_v2`` serves them all, instead of one max-batch
buffer per context) and, with ``cuda_graphs`` (default), one context captured into a CUDA graph per batch
bucket (requests are padded up to their bucket, so the graphs are bounded and ``warmup()`` captures them
all ahead); without graphs, one context whose input shape is set per call. Captures hold the process-wide
capture lock, in thread-local mode (ganrt.runtime.capture), and a capture whose enqueue fails is an error,
never an empty graph replayed.

tensorrt and torch.cuda are touched only when this backend is loaded; the engine-matching logic below is
pure and runs anywhere.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from ganrt import precisions
from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.backends import BackendRow, BundleView, Choice, Missing, Probe
from ganrt.runtime.base import Backend, LoadOptions, check_graph_output, dummy_feeds, first_line, to_uint8_nhwc
from ganrt.runtime.capture import CAPTURE_LOCK, captured
from ganrt.runtime.machine import tensorrt_probe
from ganrt.runtime.pool import ShapeCache, SlotPool

ENGINE_FILE = re.compile(r"(?P<precision>[a-z0-9]+)\.sm(?P<sm>\d+)\.trt(?P<trt>[0-9.]+?)\.plan$")


# -- which engine fits this machine (pure) ---------------------------------------------------------------
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
    """An engine runs only on the TensorRT it was built with: every recorded version component must match
    (engines record all four, major.minor.patch.build; an older bundle's three match any build of them)."""
    if built is None or here is None:
        return False
    b = [p for p in built.split(".") if p]
    h = here.split(".")
    return len(b) >= 1 and b == h[:len(b)]


def engine_mismatch(name: str, entry: dict[str, Any], avail) -> str | None:
    """Why the engine cannot run here, or None when it can."""
    sm, trt = engine_target(name, entry)
    if avail.sm is None:
        return f"engine {name!r} needs a CUDA GPU; none is visible here"
    if avail.tensorrt is None:
        why = avail.problems.get("tensorrt")
        return f"engine {name!r} needs TensorRT" + (f" ({why})" if why else "; `pip install ganrt[gpu]`")
    if sm != avail.sm:
        return (f"engine {name!r} was built for {sm or 'an unknown GPU'}, this GPU ({avail.gpu}) is {avail.sm}; "
                "rebuild it here with `ganrt export --tensorrt`")
    if not trt_version_matches(trt, avail.tensorrt):
        return (f"engine {name!r} was built with TensorRT {trt or 'unknown'}, this machine has TensorRT "
                f"{avail.tensorrt}; rebuild it here with `ganrt export --tensorrt`")
    return None


def gpu_model_note(entry: dict[str, Any], gpu: str | None) -> str:
    """'' or why an engine built without a hardware-compatibility level may not fit this GPU model."""
    built_on = (entry.get("made_by") or {}).get("gpu")
    if entry.get("hardware_compatibility", "none") != "none" or not built_on or not gpu or built_on == gpu:
        return ""
    return (f"engine built on {built_on}, running on {gpu}: TensorRT guarantees a plan built without a hardware-"
            "compatibility level only on the GPU model that built it (rebuild here, or export with "
            "--trt-hardware-compat same-cc)")


def probe() -> Probe:
    version, problem = tensorrt_probe()
    return Probe({"tensorrt": version}, problem)


def variants(view: BundleView, avail, row: BackendRow) -> tuple[list[Choice], list[Missing]]:
    """One engine per precision that fits this GPU and TensorRT."""
    artifacts = view.artifacts
    choices, missing = [], []
    engines = {n: a for n, a in artifacts.items() if a.get("kind") == "engine"}
    if not engines:
        missing.append(Missing(row.name, "the bundle has no TensorRT engine (build one with `ganrt export --tensorrt` "
                                         "on the target GPU)"))
    for precision in precisions.ranked("cuda"):
        for name, entry in engines.items():
            if entry.get("precision") == precision:
                why = engine_mismatch(name, entry, avail)
                if why is None:
                    choices.append(Choice(row.name, precision, "cuda", name, (), entry.get("passed"), rank=row.rank))
                    break
                missing.append(Missing(row.name, why, precision=precision))
    return choices, missing


# -- the runner ------------------------------------------------------------------------------------------
def _libraries():
    """(tensorrt, torch): the libraries the runner drives (a seam for the CPU tests' fake modules)."""
    import tensorrt as trt
    import torch

    return trt, torch


def device_availability(torch, device_id: int):
    """This machine's Availability, with the GPU the backend runs on (``device_id``) in place of GPU 0."""
    from ganrt.runtime.machine import Availability

    avail = Availability.probe()
    if not torch.cuda.is_available() or device_id >= torch.cuda.device_count():
        return dataclasses.replace(avail, gpu=None, sm=None)
    major, minor = torch.cuda.get_device_capability(device_id)
    return dataclasses.replace(avail, gpu=torch.cuda.get_device_name(device_id), sm=f"sm{major}{minor}")


class TensorRTBackend(Backend):
    name = "tensorrt"
    static_shapes = True

    def __init__(self, bundle: Bundle, choice: Choice, options: LoadOptions = LoadOptions()) -> None:
        artifact = choice.artifact
        entry = bundle.artifact(artifact)
        if entry.get("kind") != "engine":
            raise BundleError(f"artifact {artifact!r} is a {entry.get('kind')}, not a TensorRT engine")
        try:
            trt, torch = _libraries()
        except ImportError as e:
            raise BackendUnavailable(f"the TensorRT backend needs tensorrt and torch with CUDA ({e}); "
                                     "`pip install ganrt[gpu]`") from None
        avail = device_availability(torch, int(options.device_id))
        why = engine_mismatch(artifact, entry, avail)
        if why is not None:
            raise BackendUnavailable(why)
        self._trt, self._torch = trt, torch
        self._device = torch.device("cuda", options.device_id)
        self.note = gpu_model_note(entry, avail.gpu)
        with torch.cuda.device(self._device):  # the engine's memory on the backend's GPU, not the current one
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(bundle.artifact_path(artifact).read_bytes())
        if self._engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} could not deserialize {entry['file']} (built for "
                                     "another GPU or TensorRT version?); rebuild it with `ganrt export --tensorrt`")

        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if set(self._input_names) != set(bundle.spec.input_names) or len(outputs) != 1:
            raise BundleError(f"engine {entry['file']} has inputs {self._input_names} and outputs {outputs}; "
                              f"the bundle's spec needs inputs {sorted(bundle.spec.input_names)} and one output")
        self._output_name = outputs[0]
        static = int(self._engine.get_tensor_shape("z")[0])  # -1 when the batch axis is dynamic
        engine_max = static if static > 0 else int(self._engine.get_tensor_profile_shape("z", 0)[2][0])
        self._output_format = bundle.graph.get("output_format", "uint8-nhwc")
        out_dtype = _torch_dtype(torch, trt, self._engine.get_tensor_dtype(self._output_name))
        check_graph_output(artifact, bundle.spec, self._output_format, str(out_dtype).removeprefix("torch."),
                           list(self._engine.get_tensor_shape(self._output_name))[1:])
        max_batch = min(options.max_batch or engine_max, engine_max)
        super().__init__(bundle.spec, precision=entry.get("precision") or "fp32", device="cuda",
                         max_batch=static if static > 0 else max_batch, artifact=artifact,
                         concurrency=options.concurrency or 2)
        if static > 0:  # such an engine takes only that batch: every request is padded to it
            self.buckets = (static,)
        self.cuda_graphs = True if options.cuda_graphs is None else options.cuda_graphs  # not part of its name
        self._slots = SlotPool(lambda: _ContextSlot(self), self.concurrency)

    def _tensor_shape(self, name: str, batch: int) -> list[int]:
        shape = list(self._engine.get_tensor_shape(name))
        shape[0] = batch
        if any(d < 0 for d in shape[1:]):
            raise BundleError(f"engine {self.artifact!r}: tensor {name} has dynamic non-batch dims {shape}")
        return shape

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._slots.slot() as slot:
            images = slot.run(feeds)
        if self._output_format == "float-nchw":
            return to_uint8_nhwc(images, self.spec.output_range)
        return images

    def _warm(self, batch: int) -> None:
        """Every slot ready for ``batch``: its CUDA graph captured (or its context made), then one run."""
        with self._slots.all() as slots:
            for slot in slots:
                slot.run(dummy_feeds(self.spec, batch))

    def _close(self) -> None:
        self._slots.close(lambda slot: slot.close())
        self._engine = None
        self._runtime = None


class _ContextSlot:
    """One caller's TensorRT state: a stream, device/pinned buffers for the largest batch, one activation
    buffer, and its contexts (one per captured batch bucket, or one reshaped per call)."""

    def __init__(self, backend: TensorRTBackend) -> None:
        torch, trt = backend._torch, backend._trt
        self.b = backend
        with torch.cuda.device(backend._device):  # a slot may be made on any caller's thread
            self.stream = torch.cuda.Stream(device=backend._device)  # non-default: TensorRT syncs the default one
            self.buffers, self.host = {}, {}
            for name in backend._input_names + [backend._output_name]:
                dtype = _torch_dtype(torch, trt, backend._engine.get_tensor_dtype(name))
                shape = backend._tensor_shape(name, backend.max_batch)
                self.buffers[name] = torch.empty(shape, dtype=dtype, device=backend._device)
                self.host[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
            # every context of this slot runs on self.stream, one at a time: one activation buffer serves them all
            self.scratch = torch.empty((max(1, int(backend._engine.device_memory_size_v2)),), dtype=torch.uint8,
                                       device=backend._device)
        self.graphs: ShapeCache[int, tuple] = ShapeCache(self._capture, maxsize=len(backend.buckets))
        self.context = None  # the eager path: one context, shape set per call
        self.context_batch = None

    def _set_shapes(self, ctx, batch: int) -> None:
        for name in self.b._input_names:
            shape = (batch, *self.buffers[name].shape[1:])
            if not ctx.set_input_shape(name, shape):
                raise RuntimeError(f"TensorRT refused input {name} of shape {shape} (outside the engine's profile)")

    def _new_context(self, batch: int):
        trt = self.b._trt
        ctx = self.b._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise RuntimeError("TensorRT could not create an execution context (see the TensorRT log)")
        ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
        self._set_shapes(ctx, batch)
        for name, buf in self.buffers.items():
            ctx.set_tensor_address(name, buf.data_ptr())
        return ctx

    def _execute(self, ctx) -> None:
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _capture(self, batch: int):
        torch = self.b._torch
        with CAPTURE_LOCK:  # its setup run too: nothing of it may overlap another thread's capture
            ctx = self._new_context(batch)
            # one plain run first: TensorRT applies shape-dependent setup lazily, which must not be captured
            self._execute(ctx)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            try:
                with captured(torch, graph, self.stream):
                    ok = ctx.execute_async_v3(self.stream.cuda_stream)
            except Exception as e:
                raise RuntimeError(f"capturing batch {batch} into a CUDA graph failed ({first_line(e)}); load "
                                   "with cuda_graphs=False") from e
            if not ok:  # as trtexec: a capture whose enqueue failed must not be replayed
                raise RuntimeError(f"TensorRT's enqueue failed while batch {batch} was captured into a CUDA graph "
                                   "(see the TensorRT log); load with cuda_graphs=False")
        return ctx, graph

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.b._torch
        batch = feeds["z"].shape[0]
        with torch.cuda.device(self.b._device), torch.cuda.stream(self.stream):
            for name in self.b._input_names:
                host = self.host[name][:batch]
                host.copy_(torch.from_numpy(feeds[name]))  # casts to the engine's input dtype if it differs
                self.buffers[name][:batch].copy_(host, non_blocking=True)
            if self.b.cuda_graphs:
                self.graphs.get(batch)[1].replay()
            else:
                if self.context is None:
                    self.context, self.context_batch = self._new_context(batch), batch
                elif self.context_batch != batch:
                    self._set_shapes(self.context, batch)
                    self.context_batch = batch
                self._execute(self.context)
            out = self.host[self.b._output_name][:batch]
            out.copy_(self.buffers[self.b._output_name][:batch], non_blocking=True)
        self.stream.synchronize()
        return out.numpy().copy()

    def close(self) -> None:
        self.stream.synchronize()
        self.graphs.clear()
        self.context = None
        self.buffers, self.host, self.scratch = {}, {}, None


def _torch_dtype(torch, trt, dtype):
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    for name, tdtype in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdtype
    if dtype not in table:
        raise BundleError(f"engine tensor dtype {dtype} is not supported by the ganrt TensorRT backend")
    return table[dtype]
