"""Parity of an imported generator against NVlabs' own forward pass, run from a checkout the user trusts.

``ganrt import nvlabs SNAPSHOT --verify-against-source CHECKOUT --trust-code``: the snapshot is loaded the
NVlabs way (``pickle.load``, which runs the module source embedded in the file, importing ``torch_utils`` and
``dnnlib`` from CHECKOUT) in a separate Python process started in isolated mode with CHECKOUT first on its
path, so nothing of it stays in ganrt's process. Both networks draw the same inputs: latents of ``seeds``
(ganrt.latents), their labels as NVlabs' one-hot ``c``, each truncation in ``truncations``,
``noise_mode='const'`` and ``force_fp32=True``. Reported per truncation and overall: max |diff| in output
units and in uint8 levels, the share of values off by more than one level, PSNR. The goal (``passed``) is
at most one level on every pixel.

This module is also the worker that process runs (``python -I -m ganrt.importers.nvlabs_source``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import ConfigError, SnapshotError

SEEDS = tuple(range(8))
TRUNCATIONS = (0.5, 0.7, 1.0)
MAX_LEVELS = 1  # the goal: NVlabs' image to within one uint8 level on every pixel
TIMEOUT_S = 1800


def check_checkout(checkout: str | os.PathLike) -> Path:
    """The checkout must be a directory holding NVlabs' ``torch_utils`` and ``dnnlib`` packages."""
    root = Path(checkout).expanduser().resolve()
    missing = [p for p in ("torch_utils/persistence.py", "dnnlib/__init__.py") if not (root / p).is_file()]
    if not root.is_dir() or missing:
        raise ConfigError(f"{checkout} is not a checkout of NVlabs' stylegan3 or stylegan2-ada-pytorch (missing "
                          f"{', '.join(missing) or 'the directory'}); clone one of them and pass its folder")
    return root


def inputs(spec, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    from ganrt.latents import labels_from_seeds, latents_from_seeds

    feeds = {"z": latents_from_seeds(list(seeds), spec.latent_dim)}
    feeds["labels"] = (labels_from_seeds(list(seeds), spec.num_classes) if spec.num_classes
                       else np.zeros(0, dtype=np.int64))
    return feeds


def ganrt_outputs(module, spec, feeds: dict[str, np.ndarray], truncations: Sequence[float]) -> np.ndarray:
    """(T, B, C, H, W) float32: ganrt's module on ``feeds`` at each truncation."""
    import torch

    z = torch.from_numpy(feeds["z"])
    labels = torch.from_numpy(feeds["labels"]) if spec.num_classes else None
    with torch.no_grad():
        return np.stack([module(z, labels, torch.full((len(z),), float(psi))).numpy() for psi in truncations])


def nvlabs_outputs(snapshot: str | os.PathLike, checkout: str | os.PathLike, *, network: str, c_dim: int,
                   feeds: dict[str, np.ndarray], truncations: Sequence[float],
                   timeout_s: float = TIMEOUT_S) -> tuple[np.ndarray, dict[str, str]]:
    """(T, B, C, H, W) float32 from NVlabs' forward pass, and the files its ``torch_utils``/``dnnlib`` came from.

    Runs code from ``checkout`` and from the snapshot: call it only for a user who said they trust both.
    """
    root = check_checkout(checkout)
    with tempfile.TemporaryDirectory(prefix="ganrt-nvlabs-") as tmp:
        feed_file, out_file = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(feed_file, z=feeds["z"], labels=feeds["labels"], c_dim=np.int64(c_dim),
                 truncation=np.asarray(truncations, dtype=np.float32))
        cmd = [sys.executable, "-I", "-m", "ganrt.importers.nvlabs_source", str(Path(snapshot).resolve()), str(root),
               network, str(feed_file), str(out_file)]
        try:
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SnapshotError(f"NVlabs' forward pass from {root} took more than {timeout_s:.0f} s") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
            raise SnapshotError(f"running NVlabs' code from {root} failed: {lines[-1] if lines else done.returncode}")
        with np.load(out_file) as out:
            modules = {str(k): str(v) for k, v in zip(out["module_names"], out["module_files"], strict=True)}
            return out["images"].astype(np.float32), modules


def compare(ours: np.ndarray, theirs: np.ndarray, truncations: Sequence[float]) -> dict[str, Any]:
    """Parity of ganrt's outputs (T, B, C, H, W) with NVlabs', per truncation and overall."""
    import torch

    from ganrt.parity import image_parity, json_safe
    from ganrt.postprocess import ToUint8NHWC

    if ours.shape != theirs.shape:
        raise SnapshotError(f"NVlabs' network draws {list(theirs.shape[1:])}, ganrt's {list(ours.shape[1:])}")
    post = ToUint8NHWC((-1.0, 1.0))
    per, worst = {}, {"max_abs_diff": 0.0, "max_levels": 0.0, "nonfinite": 0}
    for i, psi in enumerate(truncations):
        bad = int((~np.isfinite(ours[i])).sum())
        a = post(torch.from_numpy(np.nan_to_num(theirs[i]))).numpy()
        b = post(torch.from_numpy(np.nan_to_num(ours[i]))).numpy()
        p = image_parity(a, b, nonfinite=bad)
        diff = float(np.abs(ours[i].astype(np.float64) - theirs[i]).max())
        per[f"{psi:g}"] = {"max_abs_diff": diff, "max_levels": p["max_abs_diff"], "mean_levels": p["mean_abs_diff"],
                           "frac_gt_1": p["frac_gt_1"], "psnr_db": p["psnr_db"], "nonfinite": bad}
        worst = {"max_abs_diff": max(worst["max_abs_diff"], diff),
                 "max_levels": max(worst["max_levels"], p["max_abs_diff"]),
                 "nonfinite": worst["nonfinite"] + bad}
    passed = worst["max_levels"] <= MAX_LEVELS and worst["nonfinite"] == 0
    return json_safe({**worst, "goal_levels": MAX_LEVELS, "passed": passed, "per_truncation": per})


def source_parity(snapshot: str | os.PathLike, checkout: str | os.PathLike, imported, *,
                  seeds: Sequence[int] = SEEDS, truncations: Sequence[float] = TRUNCATIONS) -> dict[str, Any]:
    """Parity of ``imported`` (ganrt.importers.nvlabs.Imported) against NVlabs' forward pass of the same
    network, run from ``checkout`` (trusted code)."""
    spec, network = imported.spec, imported.source["network"]
    feeds = inputs(spec, seeds)
    theirs, modules = nvlabs_outputs(snapshot, checkout, network=network, c_dim=spec.num_classes, feeds=feeds,
                                     truncations=truncations)
    ours = ganrt_outputs(imported.module, spec, feeds, truncations)
    return {"reference": "nvlabs", "checkout": str(check_checkout(checkout)), "nvlabs_modules": modules,
            "network": network, "noise_mode": "const", "seeds": [int(s) for s in seeds],
            "truncations": [float(t) for t in truncations], **compare(ours, theirs, truncations)}


def _worker(snapshot: str, checkout: str, network: str, feed_file: str, out_file: str) -> None:
    """In the isolated child: NVlabs' own loading and forward pass, with ``checkout`` first on the path."""
    sys.path.insert(0, checkout)
    import pickle

    import torch

    with open(snapshot, "rb") as f:
        data = pickle.load(f)  # NVlabs' persistence runs the source embedded in the snapshot: trusted by the user
    names = ["torch_utils", "dnnlib"]
    files = [os.path.realpath(getattr(sys.modules.get(n), "__file__", "") or "") for n in names]
    for name, file in zip(names, files, strict=True):
        if not file.startswith(os.path.realpath(checkout) + os.sep):
            raise SystemExit(f"{name} was imported from {file or 'nowhere'}, not from the checkout {checkout}")
    G = data[network].eval().requires_grad_(False).float()
    with np.load(feed_file) as feeds:
        z = torch.from_numpy(feeds["z"])
        c_dim = int(feeds["c_dim"])
        labels = torch.from_numpy(feeds["labels"])
        c = torch.nn.functional.one_hot(labels, c_dim).float() if c_dim else torch.zeros(len(z), 0)
        with torch.no_grad():
            images = [G(z, c, truncation_psi=float(psi), noise_mode="const", force_fp32=True).float().numpy()
                      for psi in feeds["truncation"]]
    np.savez(out_file, images=np.stack(images), module_names=np.array(names), module_files=np.array(files))


if __name__ == "__main__":
    _worker(*sys.argv[1:6])
