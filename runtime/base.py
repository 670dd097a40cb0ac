"""The Backend template every runtime backend implements (Polygraphy-style runner).

``Backend.infer(z, labels, truncation)`` validates the inputs once against the bundle's GeneratorSpec,
splits a request larger than ``max_batch`` into chunks, pads each chunk to its batch bucket when the
backend compiles per batch shape (``static_shapes``), calls the subclass's ``_run(feeds)``, checks what
came back and slices the padding off. A subclass loads its artifact in ``__init__`` and implements only
``_run`` (and ``_warm``/``_close`` when it holds per-shape state or resources). ``feeds`` is a dict of
contiguous numpy arrays named like the graph inputs: ``z`` float32 (B, latent_dim), ``labels`` int64 (B,)
when the spec is conditional, ``truncation`` float32 (B,) when the family has one. ``_run`` returns uint8
(B, H, W, C).

The concurrency contract: ``infer`` may be called from any number of threads at once and returns exactly
what a single-threaded call with the same inputs returns. So ``_run`` must be thread-safe: a backend whose
native objects serve one caller at a time keeps a :class:`ganrt.runtime.pool.SlotPool` of them (or a lock
where a pool does not pay). Library exceptions raised by ``_run`` reach the caller as ``BackendError`` with
the library's message; a result of the wrong dtype or shape is a ``BundleError`` naming the artifact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganrt.errors import BackendError, BundleError, GanrtError, InputError
from ganrt.runtime.pool import batch_buckets, bucket_for
from ganrt.spec import GeneratorSpec

TRUNCATION_RANGE = (0.0, 2.0)  # psi: 0 = the mean latent, 1 = no truncation, > 1 exaggerates; past 2 is noise


def validate_inputs(spec: GeneratorSpec, z: Any, labels: Any = None, truncation: Any = None,
                    ) -> dict[str, np.ndarray]:
    """Check ``z``/``labels``/``truncation`` against ``spec``; the graph feeds, or a clear InputError.

    ``truncation`` may be a scalar (used for every image); it defaults to 1.0 (no truncation) for
    families that take it and must be None for those that do not.
    """
    if z is None:
        raise InputError("no latents: pass z (an array of shape (B, latent_dim)) or seeds")
    try:
        z = np.asarray(z)
    except Exception as e:  # e.g. a CUDA tensor or a ragged list
        raise InputError(f"z must be an array of shape (B, {spec.latent_dim}), could not convert it ({e})") from None
    if z.dtype.kind not in "fiu" or z.dtype == np.bool_:
        raise InputError(f"z must hold floating-point numbers, got dtype {z.dtype}")
    if z.ndim != 2 or z.shape[1] != spec.latent_dim:
        raise InputError(f"z must have shape (B, {spec.latent_dim}) (this generator's latent_dim is "
                         f"{spec.latent_dim}), got shape {tuple(z.shape)}")
    batch = z.shape[0]
    if batch < 1:
        raise InputError("batch size is 0: pass at least one latent (or one seed)")
    z = np.ascontiguousarray(z, dtype=np.float32)
    if not np.isfinite(z).all():
        bad = int((~np.isfinite(z)).sum())
        raise InputError(f"z holds {bad} NaN/Inf value(s); latents must be finite (draw them with "
                         "ganrt.latents.latents_from_seeds)")
    feeds = {"z": z}

    if spec.conditional:
        if labels is None:
            raise InputError(f"this generator is class-conditional ({spec.num_classes} classes): pass labels, "
                             f"one integer in [0, {spec.num_classes}) per image (or one for all)")
        feeds["labels"] = _labels(labels, batch, spec.num_classes)
    elif labels is not None:
        raise InputError("this generator is unconditional (num_classes = 0): it takes no labels; drop them")

    if spec.has_truncation:
        feeds["truncation"] = _truncation(1.0 if truncation is None else truncation, batch)
    elif truncation is not None:
        raise InputError(f"the {spec.arch!r} generator has no truncation input; drop truncation")
    return feeds


def _labels(labels: Any, batch: int, num_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # 3.0 is the label 3; 3.5 is an error below
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise InputError(f"labels must be integers in [0, {num_classes}), got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full((batch,), int(arr), dtype=np.int64)
    if arr.shape != (batch,):
        raise InputError(f"labels must have shape ({batch},) to match z (one label per image), "
                         f"got shape {tuple(arr.shape)}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise InputError(f"label {bad} is out of range: this generator has {num_classes} classes, "
                         f"labels must be in [0, {num_classes})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _truncation(truncation: Any, batch: int) -> np.ndarray:
    arr = np.asarray(truncation)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise InputError(f"truncation must be a number (or one per image), got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full((batch,), float(arr), dtype=np.float32)
    if arr.shape != (batch,):
        raise InputError(f"truncation must be a number or have shape ({batch},), got shape {tuple(arr.shape)}")
    lo, hi = TRUNCATION_RANGE
    if not np.all(np.isfinite(arr)) or arr.min() < lo or arr.max() > hi:
        raise InputError(f"truncation must be finite and in [{lo}, {hi}] (1.0 = none, 0.7 is typical), "
                         f"got values from {arr.min()} to {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_uint8_nhwc(x: np.ndarray, output_range: tuple[float, float]) -> np.ndarray:
    """numpy twin of ganrt.postprocess.ToUint8NHWC, for graphs exported with output_format float-nchw."""
    lo, hi = output_range
    x = (x.astype(np.float32) + np.float32(-lo)) * np.float32(255.0 / (hi - lo))
    return np.ascontiguousarray(np.clip(x, 0.0, 255.0).round().astype(np.uint8).transpose(0, 2, 3, 1))


@dataclass(frozen=True)
class LoadOptions:
    """How a backend is loaded: the options ``ganrt.runtime.load`` passes to every backend alike."""

    threads: int | None = None  # CPU threads (None: physical cores)
    max_batch: int | None = None  # split requests above this (None: the bundle's)
    concurrency: int | None = None  # callers served at once by pooled backends (None: from the thread count)
    cuda_graphs: bool | None = None  # replay captured CUDA graphs (None: the backend's default)
    device_id: int = 0
    trust_code: bool = False  # the torch backend may import the code a user's module's spec names


def output_contract(spec: GeneratorSpec, output_format: str) -> tuple[str, tuple[int, ...]]:
    """(numpy dtype name, shape without the batch axis) the bundle's graph must return."""
    if output_format == "float-nchw":
        return "float32", (spec.channels, spec.height, spec.width)
    return "uint8", (spec.height, spec.width, spec.channels)


def check_graph_output(artifact: str, spec: GeneratorSpec, output_format: str, dtype: Any,
                       shape: list | tuple | None) -> None:
    """BundleError unless a graph declares the output the manifest promises (``shape``: without the batch
    axis; unknown dims, None or strings, are not checked)."""
    want_dtype, want_shape = output_contract(spec, output_format)
    try:
        got = np.dtype(dtype).name
    except TypeError:  # a type numpy has no name for (e.g. "tensor(float8e4m3fn)")
        got = str(dtype)
    if got != want_dtype:
        raise BundleError(f"artifact {artifact!r} returns {got} images, but the bundle's manifest says "
                          f"{want_dtype} ({output_format}); the file does not belong to this bundle: re-export it")
    if shape is not None:
        dims = list(shape)
        if len(dims) != len(want_shape) or any(isinstance(d, int) and d >= 0 and d != w
                                                for d, w in zip(dims, want_shape, strict=False)):
            raise BundleError(f"artifact {artifact!r} returns images of shape [B, {', '.join(map(str, dims))}], but "
                              f"the bundle's manifest says [B, {', '.join(map(str, want_shape))}]; re-export it")


def pad_feeds(feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``feeds`` grown to ``batch`` rows by repeating the last one (the extra images are sliced off)."""
    extra = batch - feeds["z"].shape[0]
    if extra <= 0:
        return feeds
    return {k: np.ascontiguousarray(np.concatenate([v, np.repeat(v[-1:], extra, axis=0)])) for k, v in feeds.items()}


def dummy_feeds(spec: GeneratorSpec, batch: int) -> dict[str, np.ndarray]:
    """Valid inputs of one batch size, for warm-up."""
    feeds = {"z": np.zeros((batch, spec.latent_dim), np.float32)}
    if spec.conditional:
        feeds["labels"] = np.zeros((batch,), np.int64)
    if spec.has_truncation:
        feeds["truncation"] = np.ones((batch,), np.float32)
    return feeds


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Backend:
    """Template base: subclasses set the attributes below in ``__init__`` and implement ``_run``."""

    name: str = "base"  # the backend table's row name: "torch", "onnxruntime", "openvino", "tensorrt"
    static_shapes: bool = False  # compiles per batch shape: batches are padded to ``buckets``

    def __init__(self, spec: GeneratorSpec, *, precision: str, device: str, max_batch: int,
                 option: str | None = None, provider: str | None = None, artifact: str | None = None,
                 concurrency: int = 1, exact_batches: tuple[int, ...] = ()) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.spec = spec
        self.precision = precision
        self.device = device
        self.max_batch = int(max_batch)
        # "cuda", "trtep", "compile", "cudagraph", "rw": part of the variant name
        self.option = option
        self.provider = provider
        self.artifact = artifact
        self.concurrency = max(1, int(concurrency))
        # the batch sizes compiled ahead (static shapes) or warmed (dynamic); requests are padded up to one
        self.buckets = batch_buckets(self.max_batch, exact_batches)
        self.closed = False

    @property
    def variant(self) -> str:
        """'<backend>-<precision>[-<option>]', the name benchmarks and the manifest use."""
        return f"{self.name}-{self.precision}" + (f"-{self.option}" if self.option else "")

    def infer(self, z: Any, labels: Any = None, truncation: Any = None) -> np.ndarray:
        """Validated, split into max_batch chunks, run, stitched: uint8 (B, H, W, C). Thread-safe."""
        if self.closed:
            raise InputError(f"the {self.variant} generator is closed; load the bundle again")
        feeds = validate_inputs(self.spec, z, labels, truncation)
        batch = feeds["z"].shape[0]
        if batch <= self.max_batch:
            return self.run_batch(feeds)
        return np.concatenate([self.run_batch({k: v[i:i + self.max_batch] for k, v in feeds.items()})
                               for i in range(0, batch, self.max_batch)], axis=0)

    def run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One validated batch of at most max_batch: padded to its bucket (static shapes), run, checked."""
        batch = feeds["z"].shape[0]
        run = bucket_for(batch, self.buckets) if self.static_shapes else batch
        try:
            images = self._run(pad_feeds(feeds, run))
        except GanrtError:
            raise
        except Exception as e:  # the library's own failure: keep its message, say which variant
            raise BackendError(f"{self.variant} failed on a batch of {batch}: {first_line(e)}") from e
        return self._checked(images, run)[:batch]

    def _checked(self, images: Any, batch: int) -> np.ndarray:
        expected = (batch, self.spec.height, self.spec.width, self.spec.channels)
        dtype, shape = getattr(images, "dtype", None), tuple(getattr(images, "shape", ()))
        if dtype != np.uint8 or shape != expected:
            raise BundleError(f"{self.variant} (artifact {self.artifact!r}) returned {dtype} {shape}, expected uint8 "
                              f"{expected}; the artifact does not match the bundle's manifest: re-export it")
        return images

    def warmup(self, batch_sizes: Iterable[int] | None = None) -> list[int]:
        """Compile/capture/allocate for ``batch_sizes`` (default: every bucket) so no later call pays for it.

        Returns the batch sizes warmed (each request size maps to its bucket on static-shape backends).
        """
        if self.closed:
            raise InputError(f"the {self.variant} generator is closed; load the bundle again")
        if batch_sizes is None:
            sizes = list(self.buckets)
        else:
            sizes = []
            for b in batch_sizes:
                if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= self.max_batch:
                    raise InputError(f"warm-up batch sizes must be integers in [1, {self.max_batch}], got {b!r}")
                sizes.append(bucket_for(int(b), self.buckets) if self.static_shapes else int(b))
            sizes = sorted(set(sizes))
        for b in sizes:
            try:
                self._warm(b)
            except GanrtError:
                raise
            except Exception as e:
                raise BackendError(f"{self.variant} failed to warm up batch {b}: {first_line(e)}") from e
        return sizes

    def _warm(self, batch: int) -> None:
        """Prepare ``batch`` (a bucket): by default one call; pooled backends prepare every slot."""
        self._run(dummy_feeds(self.spec, batch))

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Release sessions, engines and device buffers (subclasses override)."""

    def close(self) -> None:
        if not self.closed:
            self._close()
            self.closed = True

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.variant} device={self.device} max_batch={self.max_batch}>"
