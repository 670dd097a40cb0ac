"""Atomic file writes: a crash or an error never leaves a torn or half-written file behind.

Also the two primitives crash-safe writers build on: :func:`exclusive_lock` (one writer at a time, across
processes and threads; released by the kernel when its holder dies) and :func:`move_into` (a finished file
moved to its final name in one rename, flushed to disk).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def remove_temp_files(folder: str | os.PathLike, name: str = "*") -> None:
    """Remove the temporary files :func:`atomic_path` left in ``folder`` for ``name`` (every name by default)
    when a kill interrupted a write: ``.<name>.<random>.tmp``."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.is_dir() and not tmp.is_symlink():  # a directory moved across file systems (move_into)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` with ``os.replace``.

    The temporary file lives in the same directory so the final rename is atomic on POSIX.
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; a written file should get the usual permissions (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors_json(path: str | os.PathLike, tensors: dict, meta: dict) -> Path:
    """Write torch tensors as safetensors, atomically, with ``meta`` as JSON under the header key 'ganrt'.

    The one file layout of ganrt's checkpoints, optimiser states and classifiers: weights need no pickle and
    the JSON says what the file is.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ganrt": json.dumps(meta)})
    return path


def read_tensors_json(path: str | os.PathLike) -> str | None:
    """The raw 'ganrt' JSON string (or None) of a file written by :func:`save_tensors_json`, reading no tensor.

    Raises the safetensors library's own errors for a torn or foreign file; callers turn them into theirs.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("ganrt")


def load_tensors_json(path: str | os.PathLike) -> tuple[dict, str | None]:
    """(tensors, the raw 'ganrt' JSON string or None) of a file written by :func:`save_tensors_json`; errors
    as :func:`read_tensors_json`."""
    from safetensors.torch import load_file

    raw = read_tensors_json(path)
    return load_file(str(path)), raw


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move a finished file (or directory) to ``dest`` atomically (rename; a copy to a temporary name when
    ``src`` is on another file system), flushed to disk. ``dest`` never holds a partial file."""
    src, dest = Path(src), Path(dest)
    try:
        os.replace(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if src.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
    fsync_path(dest)


class LockBusy(Exception):
    """The lock is held by another process (or another open of it in this process)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.holder = holder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, timeout: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive advisory lock (``flock``) on the file ``path``, created for the purpose and removed
    on release (no file is left behind).

    Waits up to ``timeout`` seconds, then raises :class:`LockBusy` naming the holder's process id. The kernel
    releases the lock when its holder exits or is killed, so a crash never leaves anything locked (only the
    empty lock file, which the next holder takes over). Each call opens the file anew: two threads of one
    process exclude each other too.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockBusy(path, f"process {holder}" if holder.isdigit() else "another process") from None
            time.sleep(0.05)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file as it released it: lock the one at ``path``
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing the descriptor releases the lock
