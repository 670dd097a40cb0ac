"""torch backend: the generator rebuilt from the bundle's generator.safetensors, plus ToUint8NHWC.

Imported only when the torch backend is loaded. The reference every other backend is compared
against (fp32 on CPU). On CUDA it also runs fp16/bf16 (weights cast at load) and, with
``cuda_graphs=True``, replays one captured CUDA graph per batch size from static input/output
buffers: after the first call at a batch size, a request costs one graph launch plus two copies.
``compile=True`` wraps the module in ``torch.compile``.
"""

from __future__ import annotations

import numpy as np
import torch

from ganrt.bundle import Bundle
from ganrt.errors import BackendUnavailable, BundleError
from ganrt.runtime.base import Backend

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, *, precision: str = "fp32", device: str = "cpu", max_batch: int | None = None,
                 compile: bool = False, cuda_graphs: bool = False, threads: int | None = None,
                 trust_code: bool = False) -> None:
        from ganrt.checkpoint import load_generator
        from ganrt.postprocess import ToUint8NHWC

        if precision not in DTYPES:
            raise BackendUnavailable(f"the torch backend runs fp32 (and fp16/bf16 on CUDA), not {precision}; "
                                     "use an onnxruntime or tensorrt int8 artifact")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' asked for but torch sees no CUDA GPU here; use device='cpu'")
        if device == "cpu" and precision != "fp32":
            raise BackendUnavailable(f"torch {precision} runs on CUDA only (CPU {precision} kernels are slow and "
                                     "not what a GPU computes); use precision='fp32' on CPU")
        if cuda_graphs and device != "cuda":
            raise BackendUnavailable("CUDA graphs need device='cuda'")
        options = (("cuda",) if device == "cuda" else ()) + (("compile",) if compile else ()) + \
            (("cudagraph",) if cuda_graphs else ())
        super().__init__(bundle.spec, precision=precision, device=device,
                         max_batch=max_batch or int(bundle.graph.get("max_batch") or 64),
                         option="-".join(options) or None)
        if threads is not None and device == "cpu":
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-module thread pool
        # a user's module: rebuilt only with trust_code (its factory is imported), called as export calls it
        generator, spec = load_generator(bundle.artifact_path("weights"), ema=True, device=device,
                                         trust_code=trust_code)
        if spec != bundle.spec:
            raise BundleError(f"bundle {bundle.path}: generator.safetensors describes another generator than the "
                              "manifest's spec; re-export the bundle")
        self._torch = torch
        self._dtype = getattr(torch, DTYPES[precision])
        self._module = _WithPostprocess(generator, ToUint8NHWC(spec.output_range)).to(device, self._dtype).eval()
        self._model = torch.compile(self._module) if compile else self._module
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[int, _CapturedBatch] = {}

    def _tensors(self, feeds: dict[str, np.ndarray]) -> dict:
        torch = self._torch
        out = {}
        for k, v in feeds.items():
            t = torch.from_numpy(v)
            if t.is_floating_point():
                t = t.to(self._dtype)
            out[k] = t.to(self.device, non_blocking=True)
        return out

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        if self.cuda_graphs:
            batch = feeds["z"].shape[0]
            captured = self._graphs.get(batch)
            if captured is None:
                captured = self._graphs[batch] = _CapturedBatch(self._model, self._tensors(feeds))
            return captured.replay(feeds)
        with torch.inference_mode():
            try:
                images = self._model(**self._tensors(feeds))
            except Exception as e:
                if self.option and "compile" in self.option:
                    raise BackendUnavailable(f"torch.compile failed here ({type(e).__name__}: "
                                             f"{str(e).splitlines()[0] if str(e) else ''}); run without compile"
                                             ) from None
                raise
        return images.cpu().numpy()

    def _close(self) -> None:
        self._graphs.clear()
        self._module = self._model = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


class _WithPostprocess(torch.nn.Module):
    """G + ToUint8NHWC called with keyword inputs (z, labels, truncation) -> uint8 (B, H, W, C)."""

    def __init__(self, generator: torch.nn.Module, post: torch.nn.Module) -> None:
        super().__init__()
        self.g = generator
        self.post = post

    def forward(self, z, labels=None, truncation=None):
        return self.post(self.g(z, labels, truncation))


class _CapturedBatch:
    """One CUDA graph for one batch size: static inputs on the device, pinned host buffers both ways."""

    def __init__(self, model, example: dict) -> None:
        self._torch = torch
        self.inputs = {k: v.clone() for k, v in example.items()}  # (B, ...) static device buffers
        self.host_in = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in self.inputs.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm up outside the capture: cuDNN autotuning and lazy inits allocate
                model(**self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.output = model(**self.inputs)  # (B, H, W, C) uint8, a static device buffer
        self.host_out = torch.empty(self.output.shape, dtype=self.output.dtype, pin_memory=True)

    def replay(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        for k, v in feeds.items():
            self.host_in[k].copy_(torch.from_numpy(v))  # casts fp32 -> fp16/bf16 where the buffer is
            self.inputs[k].copy_(self.host_in[k], non_blocking=True)
        self.graph.replay()
        self.host_out.copy_(self.output, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self.host_out.numpy().copy()
