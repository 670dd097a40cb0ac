"""Response bodies of ``/v1/generate``: npy, one PNG, or a zip of PNGs, each PNG with provenance chunks.

Run in a worker thread (PNG compression is CPU work that must not stall the event loop).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from ganrt.images import png_bytes, provenance
from ganrt.serve.batcher import Work

MEDIA_TYPES = {"npy": "application/x-npy", "png": "image/png", "zip": "application/zip"}


def npy(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
    return buf.getvalue()


def _texts(work: Work, *, bundle_sha256: str, variant: str) -> list[dict[str, str]]:
    """The text chunks of each image: what `ganrt generate` writes (seed, label, truncation, bundle, variant)."""
    out = []
    for i in range(work.n):
        t = None if work.truncation is None else float(work.truncation[i])
        text = {"seed": "" if work.seeds is None else str(int(work.seeds[i])),
                "label": "" if work.labels is None else str(int(work.labels[i])),
                **provenance(bundle_sha256=bundle_sha256, variant=variant, truncation=t)}
        out.append(text)
    return out


def png(images: np.ndarray, work: Work, *, bundle_sha256: str, variant: str) -> bytes:
    (text,) = _texts(work, bundle_sha256=bundle_sha256, variant=variant)
    return png_bytes(images[0], text=text)


def zip_of_pngs(images: np.ndarray, work: Work, *, bundle_sha256: str, variant: str) -> bytes:
    buf = io.BytesIO()
    texts = _texts(work, bundle_sha256=bundle_sha256, variant=variant)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for i, (image, text) in enumerate(zip(images, texts, strict=True)):
            seed = text["seed"] or str(i)
            label = f"-label{int(text['label']):03d}" if text["label"] else ""
            zf.writestr(f"{i:04d}-seed{seed}{label}.png", png_bytes(image, text=text))
    return buf.getvalue()


def encode(fmt: str, images: np.ndarray, work: Work, *, bundle_sha256: str, variant: str) -> bytes:
    if fmt == "npy":
        return npy(images)
    if fmt == "png":
        return png(images, work, bundle_sha256=bundle_sha256, variant=variant)
    return zip_of_pngs(images, work, bundle_sha256=bundle_sha256, variant=variant)
