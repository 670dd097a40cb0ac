"""Image grids and PNG files with provenance, shared by training samples, `generate` and reports."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from ganrt.fileio import atomic_path


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """(B, H, W, C) uint8 -> one (H', W', C) uint8 image, ``nrow`` images per row."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (B, H, W, C), got shape {images.shape}")
    b, h, w, c = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(b))))
    rows = int(math.ceil(b / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None, scale: int = 1) -> bytes:
    """An (H, W, C) uint8 image as PNG bytes; ``text`` becomes PNG tEXt chunks (provenance)."""
    from PIL import Image, PngImagePlugin

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    pil = Image.fromarray(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(str(k), str(v))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray, text: dict[str, str] | None = None, scale: int = 1) -> Path:
    """Write an (H, W, C) uint8 image atomically; ``text`` becomes PNG tEXt chunks (provenance)."""
    path = Path(path)
    data = png_bytes(image, text, scale)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def provenance(*, bundle_sha256: str, variant: str, truncation: float | None) -> dict[str, str]:
    """The text chunks every generated PNG carries (``seed`` and ``label`` are added per image)."""
    from ganrt import __version__

    return {"truncation": "" if truncation is None else f"{truncation:g}", "bundle_sha256": bundle_sha256,
            "variant": variant,
            "generated": f"machine-generated image (GAN generator, ganrt {__version__}); not a photograph",
            "Software": f"ganrt {__version__}"}


def save_grid(path: str | os.PathLike, images: np.ndarray, nrow: int | None = None,
              text: dict[str, str] | None = None, scale: int = 1) -> Path:
    return save_png(path, make_grid(images, nrow=nrow), text=text, scale=scale)
