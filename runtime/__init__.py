"""Runtime: one Generator API over torch, onnxruntime, OpenVINO and TensorRT backends.

    gen = ganrt.runtime.load("bundle/", backend="auto", precision=None)
    images = gen.generate(seeds=range(16), labels=3, truncation=0.7)   # uint8 (16, H, W, C)
    gen.backend, gen.variant, gen.reason                                  # what runs, and why
    ganrt.runtime.load("bundle/", batch_size=64)   # auto ranks by the benchmarks measured at batch 64
    gen.warmup()                                   # compile every batch shape ahead (a server does this)

``Generator.generate`` is thread-safe on every backend: called from many threads at once it returns
exactly what one thread would get (backends pool their single-caller objects; see ganrt.runtime.base).

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
from ganrt.errors import BackendUnavailable, ConfigError, GanrtError, InputError
from ganrt.latents import latents_from_seeds
from ganrt.runtime.backends import BACKENDS, Choice
from ganrt.runtime.base import Backend, LoadOptions, first_line, validate_inputs
from ganrt.runtime.machine import Availability, describe_machine
from ganrt.runtime.selection import select
from ganrt.runtime.tuning import machine_key, read_tuning

__all__ = ["load", "Generator", "Backend", "Choice", "select", "validate_inputs", "describe_machine",
           "Availability", "BACKENDS", "LoadOptions"]


class Generator:
    """A loaded bundle: ``generate()`` draws uint8 (B, H, W, C) images with the chosen backend.

    Thread-safe: ``generate`` may be called from any number of threads at once, on every backend, and
    returns exactly what a single-threaded call with the same inputs returns. ``warmup()`` compiles every
    batch shape the backend will use, so no later request pays a compile.
    """

    def __init__(self, runner: Backend, bundle: Bundle, choice: Choice) -> None:
        self._runner = runner
        self.bundle = bundle
        self.choice = choice
        note = getattr(runner, "note", "")
        self.reason = choice.reason + (f"; {note}" if note else "")

    spec = property(lambda self: self._runner.spec)
    backend = property(lambda self: self._runner.name, doc="a row of ganrt.runtime.backends.BACKENDS")
    provider = property(lambda self: self._runner.provider, doc="onnxruntime's execution provider, else None")
    precision = property(lambda self: self._runner.precision)
    device = property(lambda self: self._runner.device)
    variant = property(lambda self: self._runner.variant, doc="'<backend>-<precision>[-<option>]'")
    max_batch = property(lambda self: self._runner.max_batch)
    artifact = property(lambda self: self.choice.artifact)
    concurrency = property(lambda self: self._runner.concurrency,
                           doc="callers a pooled backend serves at once (more wait for a free slot)")
    batch_buckets = property(lambda self: self._runner.buckets if self._runner.static_shapes else None,
                             doc="the batch sizes compiled (requests are padded up to one), or None: any size")

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
        Requests above ``max_batch`` are split and stitched. Safe to call from many threads at once.
        """
        if (seeds is None) == (z is None):
            raise InputError("pass exactly one of seeds (e.g. range(16)) or z (an array (B, latent_dim))")
        if seeds is not None:
            if isinstance(seeds, (int, np.integer)):
                seeds = [int(seeds)]
            z = latents_from_seeds(list(seeds), self.spec.latent_dim)
        return self._runner.infer(z, labels, truncation)

    def warmup(self, batch_sizes: Iterable[int] | None = None) -> list[int]:
        """Compile, capture or allocate ahead for ``batch_sizes`` (default: every batch bucket up to
        max_batch), for every pooled slot; returns the batch sizes prepared. A server calls it before it
        reports ready."""
        return self._runner.warmup(batch_sizes)

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
         batch_size: int | None = None, concurrency: int | None = None, trust_code: bool = False) -> Generator:
    """Open a bundle (hashes verified) and load a backend for it.

    backend: "auto" picks the fastest variant available here that passed parity (see
        ganrt.runtime.selection); or a row of ganrt.runtime.backends.BACKENDS: "torch", "onnxruntime",
        "openvino", "tensorrt".
    precision: "fp32", "fp16", "bf16", "int8" or None (the backend's best that passed parity).
    device: "cpu", "cuda" or None (any). provider: onnxruntime's "cpu", "cuda" or "tensorrt".
    threads: CPU threads (default: physical cores). compile: the torch backend's torch.compile variant.
    cuda_graphs: replay captured CUDA graphs per batch bucket (default: on for onnxruntime-cuda and
        TensorRT, off for torch, where True picks the "-cudagraph" variant). max_batch: split requests
        above this (default: the bundle's).
    variant: one variant by name, e.g. "onnxruntime-fp32-rw" (the ConvTranspose-rewritten graph on
        onnxruntime) or "openvino-int8" (the NNCF int8 IR).
    available: what this machine has (tests pass their own; default: probed).
    batch_size: a hint of the typical request size: auto ranks variants by this machine's tuning record
        (ganrt.runtime.tuning, for ``threads``) at the measured batch closest to it (default: the smallest
        batch measured). gen.reason names the batch the decision used. Requests of any size still work.
    concurrency: how many callers a pooled backend (OpenVINO infer requests, TensorRT contexts, CUDA
        graphs) serves at once; default: the thread count on the CPU, 2 on a GPU. More callers wait.
    trust_code: a bundle of a user's own module may run on torch, which imports the code its spec names.
    """
    for name, value in (("threads", threads), ("max_batch", max_batch), ("concurrency", concurrency)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be >= 1 (an integer), got {value!r}")
    avail = available or Availability.probe()
    options = LoadOptions(threads=threads, max_batch=max_batch, concurrency=concurrency, cuda_graphs=cuda_graphs,
                          trust_code=trust_code)
    for attempt in range(3):  # a bundle re-exported while it was loading is loaded again (new files, new manifest)
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.open(bundle_dir)
        tuning = read_tuning(bundle.path, machine_key(threads))
        choice = select(bundle.to_dict(), avail, backend=backend, precision=precision, device=device,
                        provider=provider, variant=variant, batch_size=batch_size, compile=compile,
                        cuda_graphs=cuda_graphs, tuning=tuning, trust_code=trust_code)
        try:
            runner = _build(bundle, choice, options)
        except Exception:
            if attempt < 2 and not isinstance(bundle_dir, Bundle) and bundle.replaced():
                continue
            raise
        return Generator(runner, bundle, choice)
    raise AssertionError("unreachable")


def _build(bundle: Bundle, choice: Choice, options: LoadOptions) -> Backend:
    """The backend row's runner for ``choice``; a library's own failure becomes BackendUnavailable."""
    runner_class = BACKENDS[choice.backend].runner_class()
    try:
        return runner_class(bundle, choice, options)
    except GanrtError:
        raise
    except Exception as e:  # the library refused the artifact or the device: say which, keep its words
        raise BackendUnavailable(f"{choice.variant} could not be loaded from {bundle.path} "
                                 f"({type(e).__name__}: {first_line(e)})") from e
