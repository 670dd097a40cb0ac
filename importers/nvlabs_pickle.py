"""An allow-listed reader of NVlabs network pickles: tensors and plain data come back, no code runs.

NVlabs snapshots (StyleGAN2-ADA, StyleGAN3) are pickles whose networks are "persistent" objects: each is
stored as a call of NVlabs' reconstructor with ``{type, version, module_src, class_name, state}``, and
unpickling them the usual way executes ``module_src``, Python source carried inside the file. Here every
global the pickle names is looked up in :data:`ALLOWED`, which maps it to a stand-in:

- the persistence reconstructor -> :class:`Persistent`, a record of the class name, the init arguments and
  the state, that keeps only a sha256 of ``module_src`` (never executed, imported or kept);
- torch's tensor and parameter rebuilders, and the storage loader (torch's own ``weights_only`` loader on
  the storage bytes, mapped to the CPU) -> plain CPU tensors;
- ``collections.OrderedDict``, NVlabs' ``EasyDict`` (a dict), ``set``/``frozenset``, and numpy's array,
  dtype and scalar rebuilders (object dtypes refused) -> the plain values.

Any other global is refused with one line naming it (:class:`ganrt.errors.SnapshotError`), and a file that
is not a complete pickle of this kind (truncated, tampered) gives one line as well.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganrt.errors import SnapshotError

MAX_BYTES = 8 << 30  # a snapshot larger than this is not a generator pickle


@dataclass
class Persistent:
    """One NVlabs persistent object as data: what ``_reconstruct_persistent_obj`` would have rebuilt."""

    class_name: str
    version: int | None
    module_sha256: str  # of the embedded source, which is never executed
    state: dict[str, Any] = field(repr=False)

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return plain(self.state.get("_init_kwargs") or {})

    def child(self, name: str) -> "Persistent | None":
        return (self.state.get("_modules") or {}).get(name)

    def attr(self, name: str, default: Any = None) -> Any:
        return plain(self.state.get(name, default))

    def tensors(self, prefix: str = "") -> dict[str, Any]:
        """Parameters and persistent buffers by their state-dict names (as ``module.state_dict()`` names them)."""
        out: dict[str, Any] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None and name not in skip:
                    out[prefix + name] = value
        for name, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, Persistent):
                out.update(sub.tensors(f"{prefix}{name}."))
            elif sub is not None:
                raise SnapshotError(f"submodule {prefix}{name} is a {type(sub).__name__}, not an NVlabs network "
                                    "object; this snapshot layout is not supported")
        return out

    def walk(self, prefix: str = ""):
        """(qualified name, Persistent) of this object and every persistent submodule, depth first."""
        yield prefix.rstrip("."), self
        for name, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, Persistent):
                yield from sub.walk(f"{prefix}{name}.")


def plain(value: Any) -> Any:
    """EasyDicts, OrderedDicts, tuples and numpy scalars/arrays turned into JSON-like values."""
    import numpy as np

    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, _NumpyArray):
        return plain(value.value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _reconstruct_persistent(meta: Any) -> Persistent:
    if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str):
        raise SnapshotError("an NVlabs persistent object without a class name: the file is damaged or not a "
                            "network snapshot")
    if meta.get("type", "class") != "class":
        raise SnapshotError(f"NVlabs persistent object of type {meta.get('type')!r} is not supported (only 'class')")
    source = meta.get("module_src")
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest() if isinstance(source, str) else ""
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise SnapshotError(f"NVlabs object {meta['class_name']!r} has a state of type {type(state).__name__}, "
                            "expected a dict")
    version = meta.get("version")
    return Persistent(class_name=meta["class_name"], version=version if isinstance(version, int) else None,
                      module_sha256=digest, state=dict(state))


class _EasyDict(dict):
    """NVlabs' ``dnnlib.EasyDict`` is a dict with attribute access; here it is only a dict."""


def _load_storage(data: bytes):
    """torch's legacy storage bytes, read by torch's own weights-only loader onto the CPU."""
    import torch

    if not isinstance(data, (bytes, bytearray)):
        raise SnapshotError("a tensor storage in the snapshot is not stored as bytes")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, torch.TypedStorage):
        raise SnapshotError(f"a tensor storage in the snapshot holds a {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    import torch

    if not isinstance(storage, torch.TypedStorage):
        raise SnapshotError("a tensor in the snapshot does not point at a storage")
    t = torch.empty((0,), dtype=storage.dtype)
    t.set_(storage.untyped(), int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))
    return t


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    import torch

    if not isinstance(data, torch.Tensor):
        raise SnapshotError("a parameter in the snapshot does not hold a tensor")
    return data


class _NumpyDType:
    """A pickled ``numpy.dtype``, kept as its name until an array or scalar needs it: only plain numeric
    dtypes (bool, integers, floats, complex) are made, so no pickled state can turn raw bytes into objects."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        self.name = name if isinstance(name, str) else ""
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "=", "|"):
            self.byteorder = state[1]

    def resolve(self):
        import numpy as np

        if not self.name or self.name[0] not in "biufc" or not self.name[1:].isdigit():
            raise SnapshotError(f"numpy dtype {self.name!r} refused (only plain numbers are read)")
        dtype = np.dtype(self.name)
        return dtype if self.byteorder in ("=", "|") else dtype.newbyteorder(self.byteorder)


class _NumpyArray:
    """A pickled ``numpy.ndarray``: rebuilt from its raw bytes and a plain dtype (no object arrays)."""

    value: Any = None

    def __setstate__(self, state: Any) -> None:
        import numpy as np

        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], _NumpyDType)
                and isinstance(state[3], (bytes, bytearray))):
            raise SnapshotError("a numpy array in the snapshot is not a plain array of numbers")
        shape, dtype, fortran, data = state
        shape = tuple(int(s) for s in shape)
        flat = np.frombuffer(bytes(data), dtype=dtype.resolve())
        if flat.size != int(np.prod(shape)):
            raise SnapshotError("a numpy array in the snapshot has fewer bytes than its shape needs")
        self.value = flat.reshape(shape, order="F" if fortran else "C").copy()


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> _NumpyArray:
    if cls is not _NumpyArray:
        raise SnapshotError(f"numpy array of class {getattr(cls, '__name__', cls)!r} refused (only plain arrays)")
    return _NumpyArray()


def _numpy_scalar(dtype: Any, data: Any = None):
    import numpy as np

    if not isinstance(dtype, _NumpyDType) or not isinstance(data, (bytes, bytearray)):
        raise SnapshotError("a numpy scalar in the snapshot is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype.resolve(), count=1)[0]


# (module, name) -> the stand-in the pickle gets instead of that global. Loaded lazily so the table itself
# imports neither torch nor numpy.
ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): lambda: _reconstruct_persistent,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda: _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda: _load_storage,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): lambda: _EasyDict,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("numpy", "ndarray"): lambda: _NumpyArray,
    ("numpy", "dtype"): lambda: _NumpyDType,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_scalar,
}


class AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from :data:`ALLOWED`; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        make = ALLOWED.get((module, name))
        if make is None and module.startswith("dnnlib.tflib"):
            raise SnapshotError(f"the snapshot names {module}.{name}: a TensorFlow-era StyleGAN/StyleGAN2 pickle; "
                                "convert it to a PyTorch snapshot with NVlabs' legacy.py (stylegan2-ada-pytorch or "
                                "stylegan3: python legacy.py --source=OLD.pkl --dest=NEW.pkl), then import that")
        if make is None:
            raise SnapshotError(f"the snapshot names the global {module}.{name}, which ganrt does not load "
                                "(only tensors, plain data and NVlabs network records are read; no code from the "
                                "file runs)")
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise SnapshotError("the snapshot uses pickle persistent ids (a torch.save file, not an NVlabs network "
                            "pickle)")


@dataclass
class Snapshot:
    """What an NVlabs snapshot holds, as data: ``networks`` ("G", "G_ema", "D", ...) -> Persistent."""

    path: Path
    sha256: str
    size: int
    data: dict[str, Any] = field(repr=False)

    @property
    def networks(self) -> dict[str, Persistent]:
        return {k: v for k, v in self.data.items() if isinstance(v, Persistent)}


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """Read an NVlabs network pickle with :class:`AllowListUnpickler` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SnapshotError(f"{path} is {size / 2**30:.1f} GiB, larger than any generator snapshot")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with warnings.catch_warnings():  # torch's TypedStorage deprecation: the legacy format is what NVlabs wrote
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            data = AllowListUnpickler(io.BytesIO(raw)).load()
    except SnapshotError as e:
        raise SnapshotError(f"{path}: {e}") from None
    except Exception as e:  # truncated or tampered bytes surface as many exception types from pickle and torch
        text = " ".join(str(e).split())[:200]
        raise SnapshotError(f"{path} is not a readable NVlabs network pickle ({type(e).__name__}: {text}); "
                            "the file may be truncated or damaged") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"{path} holds a pickled {type(data).__name__}, not an NVlabs snapshot (a dict with G, "
                            "D, G_ema); TensorFlow-era .pkl files are not supported")
    return Snapshot(path=path, sha256=digest, size=size, data=data)
