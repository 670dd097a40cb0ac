"""Runtime: one Generator API over torch, onnxruntime, OpenVINO and TensorRT backends.

    gen = ganrt.runtime.load("bundle/", backend="auto", precision=None)
    images = gen.generate(seeds=range(16), labels=3, truncation=0.7)   # uint8 (16, H, W, C)
    gen.backend, gen.variant, gen.reason                                  # what runs, and why
    ganrt.runtime.load("bundle/", batch_size=64)   # auto ranks by the benchmarks measured at batch 64

Latents for seeds are ``numpy.random.Generator(PCG64(seed)).standard_normal(latent_dim)`` as float32
(``ganrt.latents.latents_from_seeds``): the same seed is the same image on every backend, within the
variant's parity. Heavy libraries are imported only by the backend that is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ganrt.bundle import Bundle
from ganrt.errors import ConfigError, InputError
from ganrt.latents import latents_from_seeds
from ganrt.runtime.base import Backend, validate_inputs
from ganrt.runtime.machine import Availability, describe_machine
from ganrt.runtime.selection import BACKENDS, Choice, select
from ganrt.runtime.tuning import machine_key, read_tuning

__all__ = ["load", "Generator", "Backend", "Choice", "select", "validate_inputs", "describe_machine",
           "Availability", "BACKENDS"]


class Generator:
    """A loaded bundle: ``generate()`` draws uint8 (B, H, W, C) images with the chosen backend."""

    def __init__(self, runner: Backend, bundle: Bundle, choice: Choice) -> None:
        self._runner = runner
        self.bundle = bundle
        self.choice = choice
        note = getattr(runner, "note", "")
        self.reason = choice.reason + (f"; {note}" if note else "")

    spec = property(lambda self: self._runner.spec)
    backend = property(lambda self: self._runner.name, doc="'torch', 'onnxruntime', 'openvino' or 'tensorrt'")
    provider = property(lambda self: self._runner.provider, doc="onnxruntime's execution provider, else None")
    precision = property(lambda self: self._runner.precision)
    device = property(lambda self: self._runner.device)
    variant = property(lambda self: self._runner.variant, doc="'<backend>-<precision>[-<option>]'")
    max_batch = property(lambda self: self._runner.max_batch)
    artifact = property(lambda self: self.choice.artifact)

    @property
    def small_batch_graph(self) -> tuple[str, int] | None:
        """(artifact, largest batch) of the graph run for small batches instead of ``artifact``, or None."""
        name = getattr(self._runner, "small_artifact", None)
        return (name, int(self._runner.small_batch_max)) if name else None

    cuda_graphs = property(lambda self: bool(getattr(self._runner, "cuda_graphs", False)),
                           doc="whether requests replay captured CUDA graphs")

    def generate(self, seeds: Iterable[int] | None = None, z: Any = None, labels: Any = None,
                 truncation: Any = None) -> np.ndarray:
        """Images for ``seeds`` (latents from ganrt.latents) or explicit latents ``z`` (B, latent_dim).

        ``labels``: one int for all images or one per image (conditional generators only).
        ``truncation``: a number or one per image, in [0, 2] (families with truncation only).
        Requests above ``max_batch`` are split and stitched.
        """
        if (seeds is None) == (z is None):
            raise InputError("pass exactly one of seeds (e.g. range(16)) or z (an array (B, latent_dim))")
        if seeds is not None:
            if isinstance(seeds, (int, np.integer)):
                seeds = [int(seeds)]
            z = latents_from_seeds(list(seeds), self.spec.latent_dim)
        return self._runner.infer(z, labels, truncation)

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ganrt Generator {self.variant} on {self.device}: {self.reason}>"


def load(bundle_dir: str | os.PathLike | Bundle, backend: str = "auto", precision: str | None = None,
         device: str | None = None, threads: int | None = None, compile: bool = False,
         cuda_graphs: bool | None = None, provider: str | None = None, max_batch: int | None = None,
         variant: str | None = None, available: Availability | None = None,
         batch_size: int | None = None, trust_code: bool = False) -> Generator:
    """Open a bundle (hashes verified) and load a backend for it.

    backend: "auto" picks the fastest variant available here that passed parity (see
        ganrt.runtime.selection); or "torch", "onnxruntime", "openvino", "tensorrt".
    precision: "fp32", "fp16", "bf16", "int8" or None (the backend's best that passed parity).
    device: "cpu", "cuda" or None (any). provider: onnxruntime's "cpu", "cuda" or "tensorrt".
    threads: CPU threads (default: physical cores). compile: torch.compile the torch backend.
    cuda_graphs: replay captured CUDA graphs per batch size (default: on for onnxruntime-cuda and
        TensorRT, off for torch). max_batch: split requests above this (default: the bundle's).
    variant: one variant by name, e.g. "onnxruntime-fp32-rw" (the ConvTranspose-rewritten graph on
        onnxruntime) or "openvino-int8" (the NNCF int8 IR).
    available: what this machine has (tests pass their own; default: probed).
    batch_size: a hint of the typical request size: auto ranks variants by this machine's tuning record
        (ganrt.runtime.tuning, for ``threads``) at the measured batch closest to it (default: the smallest
        batch measured). gen.reason names the batch the decision used. Requests of any size still work.
    trust_code: a bundle of a user's own module may run on torch, which imports the code its spec names.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    avail = available or Availability.probe()
    for attempt in range(3):  # a bundle re-exported while it was loading is loaded again (new files, new manifest)
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.open(bundle_dir)
        tuning = read_tuning(bundle.path, machine_key(threads))
        choice = select(bundle.to_dict(), avail, backend=backend, precision=precision, device=device,
                        provider=provider, variant=variant, batch_size=batch_size, tuning=tuning,
                        trust_code=trust_code)
        if compile and choice.backend != "torch":
            raise ConfigError(f"compile=True applies to the torch backend, but {choice.backend} was chosen; "
                              "pass backend='torch' or drop compile")
        try:
            runner = _build(bundle, choice, threads=threads, compile=compile or "compile" in choice.options,
                            cuda_graphs=cuda_graphs, max_batch=max_batch, trust_code=trust_code)
        except Exception:
            if attempt < 2 and not isinstance(bundle_dir, Bundle) and bundle.replaced():
                continue
            raise
        return Generator(runner, bundle, choice)
    raise AssertionError("unreachable")


def _build(bundle: Bundle, choice: Choice, *, threads, compile, cuda_graphs, max_batch, trust_code=False) -> Backend:
    if choice.backend == "torch":
        from ganrt.runtime.torch_backend import TorchBackend

        graphs = bool(cuda_graphs) or "cudagraph" in choice.options
        return TorchBackend(bundle, precision=choice.precision, device=choice.device, max_batch=max_batch,
                            compile=compile, cuda_graphs=graphs and choice.device == "cuda", threads=threads,
                            trust_code=trust_code)
    if choice.backend == "onnxruntime":
        from ganrt.runtime.onnxruntime_backend import OnnxRuntimeBackend

        provider = "tensorrt" if "trtep" in choice.options else choice.device
        return OnnxRuntimeBackend(bundle, artifact=choice.artifact, precision=choice.precision, provider=provider,
                                  option="rw" if "rw" in choice.options else None,
                                  max_batch=max_batch, threads=threads,
                                  cuda_graphs=True if cuda_graphs is None else cuda_graphs)
    if choice.backend == "openvino":
        from ganrt.runtime.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(bundle, artifact=choice.artifact, precision=choice.precision, max_batch=max_batch,
                               threads=threads)
    if choice.backend == "tensorrt":
        from ganrt.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, artifact=choice.artifact, max_batch=max_batch,
                               cuda_graphs=True if cuda_graphs is None else cuda_graphs)
    raise ConfigError(f"unknown backend {choice.backend!r}")
