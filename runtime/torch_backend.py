"""torch backend: the generator rebuilt from the bundle's generator.safetensors, plus ToUint8NHWC.

The reference every other backend is compared against (fp32 on CPU). On CUDA it also runs fp16/bf16: the
bundle's ``weights-<precision>`` when export shipped them (with their own parity on record, so ``auto`` ranks
them), else the fp32 weights cast at load (only when that precision is asked for). Each CUDA precision comes in
forms that are variants of their own: eager; ``-cl`` (channels_last memory); ``-cudagraph`` (captured CUDA
graphs replayed from static input/output buffers: after the capture at a batch bucket, a request costs one
graph launch plus two copies); ``-cl-cudagraph``; ``-compile`` (``torch.compile``, max-autotune on CUDA).

Threads: eager inference (``inference_mode``, eval-mode modules) is thread-safe as it is. ``torch.compile``
is not (pytorch/pytorch#136833, #118260: dynamo and inductor are not thread-safe), so compiled calls take a
lock and run at batch buckets (a bounded number of compiled shapes, compiled ahead by ``warmup()``). A
captured CUDA graph serves one caller at a time, so the ``-cudagraph`` variant keeps a ``SlotPool`` of
slots, each with its own stream, static buffers and one graph per batch bucket; captures are serialized
process-wide with the other backends' (ganrt.runtime.capture: one lock, thread-local capture mode).

torch is imported when this backend is loaded (and by its probe), never by ``import ganrt``.
"""

from __future__ import annotations

import threading

import numpy as np

from ganrt import precisions
from ganrt.artifacts import pick
from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.backends import BackendRow, BundleView, Choice, Missing, Probe
from ganrt.runtime.base import Backend, LoadOptions, dummy_feeds, first_line
from ganrt.runtime.capture import CAPTURE_LOCK, captured
from ganrt.runtime.machine import library_probe
from ganrt.runtime.pool import ShapeCache, SlotPool

# the CUDA variants of each precision: (options after "cuda", default-rank step); "cl": channels_last memory
CUDA_FORMS = ((), 0.0), (("cl",), 0.05), (("cudagraph",), 0.1), (("cl", "cudagraph"), 0.15), (("compile",), 0.2)


def probe() -> Probe:
    ok, problem = library_probe("torch", lambda torch: True)
    return Probe({"torch": bool(ok)}, problem)


def variants(view: BundleView, avail, row: BackendRow) -> tuple[list[Choice], list[Missing]]:
    artifacts, spec = view.artifacts, view.spec
    if not avail.torch:
        return [], [Missing(row.name, avail.problems.get(row.name) or "torch is not installed")]
    if "weights" not in artifacts:
        return [], [Missing(row.name, "the bundle has no reference weights (generator.safetensors)")]
    if spec.get("arch") == "external" and not (view.trust_code and spec.get("factory")):
        return [], [Missing(row.name, (
            f"the torch backend rebuilds this user's module by importing its code ({spec['factory']!r}): pass "
            "trust_code=True (CLI: --trust-code) if you trust the bundle's source") if spec.get("factory") else
            "the torch backend cannot rebuild this user's module (its spec names no factory): run its graphs")]
    choices: list[Choice] = []
    missing = [Missing(row.name, "the torch backend runs fp32 (and fp16/bf16 on CUDA), not int8", precision="int8")]

    def add(precision, device, options, rank):
        # the table of artifacts: weights cast at export (their own parity on record), else cast at load
        artifact = pick(artifacts, row.name, precision)
        if precision == "fp32":
            passed = True  # the reference itself
        else:
            passed = artifacts[artifact].get("passed") if artifacts[artifact].get("precision") == precision else None
        choices.append(Choice(row.name, precision, device, artifact, options, passed, rank=rank,
                              auto=True if passed is not None or precision == "fp32" else "asked"))

    if avail.cuda:
        for p in (p for p, row_p in precisions.PRECISIONS.items() if row_p.torch_dtype):
            for extra, step in CUDA_FORMS:
                add(p, "cuda", ("cuda", *extra), row.rank + step)
    for p in ("fp16", "bf16"):
        missing.append(Missing(row.name, f"torch {p} runs on CUDA only; on this CPU use precision fp32", precision=p,
                               device=None if not avail.cuda else "cpu"))
    add("fp32", "cpu", (), row.rank + 1)
    add("fp32", "cpu", ("compile",), row.rank + 1.2)
    return choices, missing


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, choice: Choice, options: LoadOptions = LoadOptions()) -> None:
        import torch

        from ganrt.checkpoint import load_generator
        from ganrt.postprocess import WithPostprocess

        precision, device = choice.precision, choice.device
        dtype = precisions.PRECISIONS[precision].torch_dtype if precision in precisions.PRECISIONS else None
        if dtype is None:
            raise BackendUnavailable(f"the torch backend runs fp32 (and fp16/bf16 on CUDA), not {precision}; "
                                     "use an onnxruntime, openvino or tensorrt int8 artifact")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' asked for but torch sees no CUDA GPU here; use device='cpu'")
        if device == "cpu" and precision != "fp32":
            raise BackendUnavailable(f"torch {precision} runs on CUDA only (CPU {precision} kernels are slow and "
                                     "not what a GPU computes); use precision='fp32' on CPU")
        self.compiled = "compile" in choice.options
        self.cuda_graphs = "cudagraph" in choice.options
        self.channels_last = "cl" in choice.options
        if self.cuda_graphs and device != "cuda":
            raise BackendUnavailable("CUDA graphs need device='cuda'")
        self.static_shapes = self.compiled or self.cuda_graphs  # a bounded set of compiled/captured shapes
        super().__init__(bundle.spec, precision=precision, device=device,
                         max_batch=options.max_batch or int(bundle.graph.get("max_batch") or 64),
                         option="-".join(choice.options) or None, artifact=choice.artifact,
                         concurrency=options.concurrency or 2)
        if options.threads is not None and device == "cpu":
            torch.set_num_threads(int(options.threads))  # process-wide: torch has no per-module thread pool
        # a user's module: rebuilt only with trust_code (its factory is imported), called as export calls it
        generator, spec = load_generator(bundle.artifact_path(choice.artifact), ema=True, device=device,
                                         trust_code=options.trust_code)
        if spec != bundle.spec:
            raise BundleError(f"bundle {bundle.path}: generator.safetensors describes another generator than the "
                              "manifest's spec; re-export the bundle")
        self._torch = torch
        self._dtype = getattr(torch, dtype)
        self._module = WithPostprocess(generator, spec.output_range).to(device, self._dtype).eval()
        if self.channels_last:  # NHWC activations: the layout tensor cores want for convolutions
            self._module = self._module.to(memory_format=torch.channels_last)
        # on a GPU, max-autotune benchmarks kernels (and may use CUDA graphs) when a shape is first compiled
        self._model = (torch.compile(self._module, mode="max-autotune" if device == "cuda" else None)
                       if self.compiled else self._module)
        self._compile_lock = threading.Lock()
        # -cudagraph: slots of (stream, one captured graph per bucket), lent one caller at a time
        self._slots = SlotPool(lambda: _GraphSlot(self), self.concurrency) if self.cuda_graphs else None

    def _tensors(self, feeds: dict[str, np.ndarray]) -> dict:
        torch = self._torch
        out = {}
        for k, v in feeds.items():
            t = torch.from_numpy(v)
            if t.is_floating_point():
                t = t.to(self._dtype)
            out[k] = t.to(self.device, non_blocking=True)
        return out

    def _forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            try:
                images = self._model(**self._tensors(feeds))
            except Exception as e:
                if self.compiled:
                    raise BackendUnavailable(f"torch.compile failed here ({type(e).__name__}: {first_line(e)}); "
                                             "run without compile") from None
                raise
        return images.cpu().numpy()

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self._slots is not None:
            with self._slots.slot() as slot:
                return slot.run(feeds)
        if self.compiled:
            with self._compile_lock:
                return self._forward(feeds)
        return self._forward(feeds)

    def _warm(self, batch: int) -> None:
        if self._slots is None:
            return super()._warm(batch)
        with self._slots.all() as slots:
            for slot in slots:
                slot.graphs.get(batch)

    def _close(self) -> None:
        if self._slots is not None:
            self._slots.close(lambda slot: slot.graphs.clear())
        self._module = self._model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


class _GraphSlot:
    """One caller's CUDA-graph state: its own stream and one captured graph per batch bucket."""

    def __init__(self, backend: TorchBackend) -> None:
        torch = backend._torch
        self.backend = backend
        self.stream = torch.cuda.Stream()
        self.graphs: ShapeCache[int, _CapturedBatch] = ShapeCache(self._capture, maxsize=len(backend.buckets))

    def _capture(self, batch: int) -> "_CapturedBatch":
        b = self.backend
        with CAPTURE_LOCK:  # the warm-up runs before the capture too: they allocate
            return _CapturedBatch(b._torch, b._model, b._tensors(dummy_feeds(b.spec, batch)), self.stream)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.graphs.get(feeds["z"].shape[0]).replay(feeds)


class _CapturedBatch:
    """One CUDA graph for one batch size: static inputs on the device, pinned host buffers both ways."""

    def __init__(self, torch, model, example: dict, stream) -> None:
        self._torch = torch
        self.stream = stream
        self.inputs = {k: v.clone() for k, v in example.items()}  # (B, ...) static device buffers
        self.host_in = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in self.inputs.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm up outside the capture: cuDNN autotuning and lazy inits allocate
                model(**self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), captured(torch, self.graph, stream):
            self.output = model(**self.inputs)  # (B, H, W, C) uint8, a static device buffer
        self.host_out = torch.empty(self.output.shape, dtype=self.output.dtype, pin_memory=True)

    def replay(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self.stream):
            for k, v in feeds.items():
                self.host_in[k].copy_(torch.from_numpy(v))  # casts fp32 -> fp16/bf16 where the buffer is
                self.inputs[k].copy_(self.host_in[k], non_blocking=True)
            self.graph.replay()
            self.host_out.copy_(self.output, non_blocking=True)
        self.stream.synchronize()
        return self.host_out.numpy().copy()
