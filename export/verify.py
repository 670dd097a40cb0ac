"""Mandatory verification: what export made against the torch fp32 reference on fixed seeds.

Two checks use what is here. An artifact's own check (the table of artifacts' ``check``: onnxruntime CPU for a
graph, OpenVINO for its IR, torch for cast weights) runs its graph with the float output too, at batch 1, an
odd batch and the largest batch up to a cap, so NaN/Inf that the uint8 cast would hide are counted. Then every
runtime variant of it runs through the runtime's own backend code at every batch bucket
(ganrt.export.variants). Both compare images with :func:`ganrt.parity.image_parity` in uint8 levels; a check
passes when its figures are inside the tolerance of its precision (:data:`TOLERANCES`).

The tolerances, and why each is what it is, are the rows of :mod:`ganrt.precisions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganrt.errors import ParityError
from ganrt.export.graph import RAW_OUTPUT, GraphModule, sample_inputs
from ganrt.parity import image_parity, json_safe
from ganrt.postprocess import ToUint8NHWC
from ganrt.precisions import PRECISIONS

VERIFY_BATCH_CAP = 16  # the largest batch verified when max_batch is larger (recorded in the manifest)
ODD_BATCH = 3


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float | None = None  # uint8 levels, anywhere
    min_psnr_db: float | None = None  # over all verified images
    max_mean_abs_diff: float | None = None
    max_nonfinite: int = 0

    def failures(self, parity: dict[str, Any]) -> list[str]:
        out = []
        if parity["nonfinite"] > self.max_nonfinite:
            out.append(f"{parity['nonfinite']} NaN/Inf values in the float output")
        if self.max_abs_diff is not None and parity["max_abs_diff"] > self.max_abs_diff:
            out.append(f"max |diff| {parity['max_abs_diff']:.0f} levels > {self.max_abs_diff:g}")
        if self.min_psnr_db is not None and parity["psnr_db"] < self.min_psnr_db:
            out.append(f"PSNR {parity['psnr_db']:.1f} dB < {self.min_psnr_db:g} dB")
        if self.max_mean_abs_diff is not None and parity["mean_abs_diff"] > self.max_mean_abs_diff:
            out.append(f"mean |diff| {parity['mean_abs_diff']:.2f} levels > {self.max_mean_abs_diff:g}")
        return out


TOLERANCES: dict[str, Tolerance] = {
    p.name: Tolerance(max_abs_diff=p.max_abs_diff, min_psnr_db=p.min_psnr_db, max_mean_abs_diff=p.max_mean_abs_diff)
    for p in PRECISIONS.values()
}  # the rows of ganrt.precisions (which says why each tolerance is what it is)


def verified_batches(max_batch: int, cap: int = VERIFY_BATCH_CAP) -> list[int]:
    """Batch 1, an odd batch and the largest verified batch, without repeats, in increasing order."""
    top = max(1, min(int(max_batch), int(cap)))
    return sorted({1, min(ODD_BATCH, top), top})


def batch_seeds(batch: int) -> list[int]:
    """The fixed seeds of batch size ``batch``: 1000 + b(b-1)/2 onwards, so no two batch sizes share a seed."""
    start = 1000 + batch * (batch - 1) // 2
    return list(range(start, start + batch))


@dataclass
class Reference:
    """The torch fp32 reference images for each verified batch (computed once, shared by every variant)."""

    batches: list[int]
    seeds: list[list[int]]
    feeds: list[dict[str, np.ndarray]]
    images: list[np.ndarray]  # uint8 (B, H, W, C)


def _as_uint8(x: np.ndarray, output_range) -> np.ndarray:
    """Float (B, C, H, W) -> uint8 (B, H, W, C) with the graph's own post-processing (NaN -> 0)."""
    t = torch.from_numpy(np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0))
    return ToUint8NHWC(output_range)(t).numpy()


class References:
    """The torch fp32 reference of ``module``, computed once per batch size on first need and shared by every
    check: ``references.at([1, 3, 16])`` -> :class:`Reference`."""

    def __init__(self, module: GraphModule, spec) -> None:
        self.module, self.spec = module, spec
        self._done: dict[int, tuple[list[int], dict[str, np.ndarray], np.ndarray]] = {}

    def at(self, batches) -> Reference:
        batches = sorted({int(b) for b in batches})
        for b in batches:
            if b not in self._done:
                seeds = batch_seeds(b)
                feeds = sample_inputs(self.spec, seeds)
                with torch.no_grad():
                    out = self.module(*(torch.from_numpy(v) for v in feeds.values()))
                images = out[0].numpy() if isinstance(out, tuple) else _as_uint8(out.numpy(), self.spec.output_range)
                self._done[b] = (seeds, feeds, images)
        return Reference(batches=batches, seeds=[self._done[b][0] for b in batches],
                         feeds=[self._done[b][1] for b in batches], images=[self._done[b][2] for b in batches])


@dataclass
class Verification:
    variant: str
    parity: dict[str, Any]  # image_parity over every verified image + per-batch figures (JSON-safe)
    passed: bool
    failures: list[str] = field(default_factory=list)
    tolerance: dict[str, Any] = field(default_factory=dict)
    images: np.ndarray | None = field(default=None, repr=False, compare=False)  # uint8, every verified batch

    def summary(self) -> str:
        p = self.parity
        return (f"{self.variant}: max |diff| {p['max_abs_diff']:.0f} levels, mean {p['mean_abs_diff']:.3f}, "
                f"PSNR {_fmt_db(p['psnr_db'])}, >1 level {100 * p['frac_gt_1']:.3f}%, NaN/Inf {p['nonfinite']}")


def _fmt_db(v) -> str:
    return f"{v:.1f} dB" if isinstance(v, (int, float)) and np.isfinite(v) else "inf dB (identical)"


def session(model_path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session (threads: torch's setting by default, so tests stay single-threaded)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])


def verify_onnx(model_path: str | Path, reference: Reference, spec, *, variant: str,
                tolerance: Tolerance) -> Verification:
    """Run the graph (outputs images [+ raw]) in onnxruntime on the reference's feeds and compare."""
    sess = session(model_path)
    out_names = [o.name for o in sess.get_outputs()]
    return compare_outputs(lambda feeds: dict(zip(out_names, sess.run(out_names, feeds), strict=True)),
                           reference, spec, variant=variant, tolerance=tolerance, runner="onnxruntime-cpu")


def compare_outputs(run, reference: Reference, spec, *, variant: str, tolerance: Tolerance,
                    runner: str) -> Verification:
    """``run(feeds) -> {"images": ..., ["raw": ...]}`` on every reference batch, compared with the reference."""
    ref_all, var_all, nonfinite, per_batch = [], [], 0, {}
    for b, feeds, ref in zip(reference.batches, reference.feeds, reference.images, strict=True):
        outs = run(feeds)
        float_images = np.asarray(outs["images"]).dtype.kind == "f"
        raw = outs.get(RAW_OUTPUT, outs["images"] if float_images else None)
        bad = int((~np.isfinite(raw)).sum()) if raw is not None else 0
        img = _as_uint8(outs["images"], spec.output_range) if float_images else np.asarray(outs["images"])
        if img.shape != ref.shape:
            raise ParityError(f"{variant}: graph returns shape {list(img.shape)} at batch {b}, the torch reference "
                              f"{list(ref.shape)}; the exported graph does not keep a dynamic batch axis")
        p = image_parity(ref, img, nonfinite=bad)
        per_batch[str(b)] = {"max_abs_diff": p["max_abs_diff"], "psnr_db": p["psnr_db"], "nonfinite": bad}
        ref_all.append(ref)
        var_all.append(img)
        nonfinite += bad
    parity = image_parity(np.concatenate(ref_all), np.concatenate(var_all), nonfinite=nonfinite)
    failures = tolerance.failures(parity)
    parity.update({"batch_sizes": list(reference.batches), "seeds": [[s[0], s[-1]] for s in reference.seeds],
                   "per_batch": per_batch, "reference": "torch-fp32", "runner": runner})
    return Verification(variant=variant, parity=json_safe(parity), passed=not failures, failures=failures,
                        tolerance=asdict(tolerance), images=np.concatenate(var_all))
