"""The Backend template every runtime backend implements (Polygraphy-style runner).

``Backend.infer(z, labels, truncation)`` validates the inputs once against the bundle's GeneratorSpec,
splits a request larger than ``max_batch`` into chunks, calls the subclass's ``_run(feeds)`` on each
chunk and stitches the results. A subclass loads its artifact in ``__init__`` and implements only
``_run`` (and ``_close`` when it holds resources). ``feeds`` is a dict of contiguous numpy arrays named
like the graph inputs: ``z`` float32 (B, latent_dim), ``labels`` int64 (B,) when the spec is
conditional, ``truncation`` float32 (B,) when the family has one. ``_run`` returns uint8 (B, H, W, C).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganrt.errors import InputError
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


class Backend:
    """Template base: subclasses set the attributes below in ``__init__`` and implement ``_run``."""

    name: str = "base"  # "torch", "onnxruntime", "openvino", "tensorrt"

    def __init__(self, spec: GeneratorSpec, *, precision: str, device: str, max_batch: int,
                 option: str | None = None, provider: str | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.spec = spec
        self.precision = precision
        self.device = device
        self.max_batch = int(max_batch)
        # "cuda", "trtep", "compile", "cudagraph" (torch's opt-in graphs; onnxruntime-cuda and tensorrt use
        # CUDA graphs by default, which their names do not repeat): part of the variant name
        self.option = option
        self.provider = provider
        self.closed = False

    @property
    def variant(self) -> str:
        """'<backend>-<precision>[-<option>]', the name benchmarks and the manifest use."""
        return f"{self.name}-{self.precision}" + (f"-{self.option}" if self.option else "")

    def infer(self, z: Any, labels: Any = None, truncation: Any = None) -> np.ndarray:
        """Validated, split into max_batch chunks, run, stitched: uint8 (B, H, W, C)."""
        if self.closed:
            raise InputError(f"the {self.variant} generator is closed; load the bundle again")
        feeds = validate_inputs(self.spec, z, labels, truncation)
        batch = feeds["z"].shape[0]
        if batch <= self.max_batch:
            return self._checked(self._run(feeds), batch)
        chunks = [self._checked(self._run({k: v[i:i + self.max_batch] for k, v in feeds.items()}),
                                min(self.max_batch, batch - i))
                  for i in range(0, batch, self.max_batch)]
        return np.concatenate(chunks, axis=0)

    def _checked(self, images: np.ndarray, batch: int) -> np.ndarray:
        expected = (batch, self.spec.height, self.spec.width, self.spec.channels)
        if images.dtype != np.uint8 or images.shape != expected:
            raise RuntimeError(f"{self.variant} returned {images.dtype} {images.shape}, expected uint8 {expected}")
        return images

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
