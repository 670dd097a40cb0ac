"""The one table of numeric precisions: what each stage needs to know about fp32, fp16, bf16 and int8.

Export verifies a variant against its row's tolerance, the runtime ranks variants by the row's order and
casts torch weights to its dtype, the CLIs offer the rows' names and ``make gpu-check`` gates on the
row's GPU limit. Adding a precision is one row here (and the export step that makes its artifact).

Tolerances (uint8 levels against the torch fp32 reference), and why:

- fp32: max 1 level: the same arithmetic in another order only flips roundings at .5.
- fp16: >= 45 dB PSNR over all verified images and at most 8 levels anywhere (fp16 storage of weights and
  activations, sensitive nodes kept fp32); measured 70.5 dB / max 1 level on a trained digits DCGAN,
  59-73 dB / max 1 level on random-init StyleGAN, BigGAN, ProGAN and VAE generators.
- bf16: >= 35 dB and at most 16 levels (8 mantissa bits; OpenVINO's bf16 hint measured ~44 dB).
- int8: >= 25 dB PSNR and mean |diff| <= 4 levels: static quantization of a generator is lossy, so max
  |diff| is recorded but not gated. Measured 41.8 dB / mean 0.50 / max 32 levels on the digits DCGAN.
Any NaN/Inf in the float output fails every precision.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    torch_dtype: str | None  # the torch dtype the torch backend casts weights to; None: torch does not run it
    max_abs_diff: float | None  # tolerance: uint8 levels anywhere (None: not gated)
    min_psnr_db: float | None  # tolerance: PSNR over all verified images
    max_mean_abs_diff: float | None  # tolerance: mean |diff| in levels
    gpu_max_abs_diff: float  # `make gpu-check`'s limit against the fp32 CPU reference (cuDNN/TF32 included)
    lossy: bool  # auto takes a lossy precision unasked only when benchmarks say it is fastest
    gpu_rank: int  # preference on a GPU without a requested precision (smaller first)
    cpu_rank: int  # the same on a CPU


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "float32", 1, None, None, gpu_max_abs_diff=2, lossy=False, gpu_rank=2, cpu_rank=0),
    Precision("fp16", "float16", 8, 45.0, None, gpu_max_abs_diff=8, lossy=False, gpu_rank=0, cpu_rank=2),
    Precision("bf16", "bfloat16", 16, 35.0, None, gpu_max_abs_diff=16, lossy=False, gpu_rank=1, cpu_rank=1),
    Precision("int8", None, None, 25.0, 4.0, gpu_max_abs_diff=64, lossy=True, gpu_rank=3, cpu_rank=3),
)}
NAMES: tuple[str, ...] = tuple(PRECISIONS)


def ranked(device: str) -> tuple[str, ...]:
    """Precision names in the order a backend prefers them on ``device`` ("cpu" or "cuda")."""
    key = (lambda p: p.gpu_rank) if device == "cuda" else (lambda p: p.cpu_rank)
    return tuple(p.name for p in sorted(PRECISIONS.values(), key=key))


def rank(name: str, device: str) -> int:
    """Position of ``name`` in :func:`ranked` (unknown names last)."""
    order = ranked(device)
    return order.index(name) if name in order else len(order)
