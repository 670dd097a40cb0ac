"""Atomic file writes: a crash or an error never leaves a torn or half-written file behind.

Also the two primitives crash-safe writers build on: :func:`exclusive_lock` (one writer at a time, across
processes and threads; released by the kernel when its holder dies) and :func:`move_into` (a finished file
moved to its final name in one rename, flushed to disk); and :func:`open_regular` / :func:`read_regular`, which
open a file that a bundle or a run ships (a lock, a manifest, a record) only when it is a regular file: never
through a symlink, never blocking on a FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
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
    """The sha256 of a regular file (a FIFO or device in its place is refused, never read forever)."""
    h = hashlib.sha256()
    with os.fdopen(open_regular(path, follow=True), "rb") as f:
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


class NotRegularFile(OSError):
    """A path that must be a regular file is a symlink, a FIFO, a device, a directory or a hard link."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{path} is {kind}, not a regular file; refusing to open it")
        self.path, self.kind = Path(path), kind


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def open_regular(path: str | os.PathLike, flags: int = os.O_RDONLY, *, create: bool = False,
                 single_link: bool = False, follow: bool = False) -> int:
    """A descriptor of the regular file ``path`` (created when ``create``), opened without following a symlink
    as its last component (unless ``follow``: a caller that confined the link's target itself) and without
    blocking on a FIFO; :class:`NotRegularFile` otherwise (also for a file with other hard links when
    ``single_link``: writing to it would change a file elsewhere)."""
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW) | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(path, "a symlink") from None
        if e.errno == errno.EISDIR:
            raise NotRegularFile(path, "a directory") from None
        raise
    st = os.fstat(fd)
    kind = next((k for test, k in _KINDS if test(st.st_mode)), None)
    if kind is None and not stat.S_ISREG(st.st_mode):
        kind = "not a regular file"
    if kind is None and single_link and st.st_nlink > 1:
        kind = f"a hard link ({st.st_nlink} names)"
    if kind is not None:
        os.close(fd)
        raise NotRegularFile(path, kind)
    return fd


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`); OSError (EFBIG) past ``limit`` bytes."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
    return data


class LockBusy(Exception):
    """The lock is held by another process (or another open of it in this process)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.holder = holder


PID_WIDTH = 20  # bytes of a lock file: its holder's process id, padded with spaces


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
        # a lock file is ours to create: never a symlink, FIFO or hard link someone planted (writing the pid
        # through it would change a file elsewhere)
        fd = open_regular(path, os.O_RDWR, create=True, single_link=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, PID_WIDTH, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockBusy(path, f"process {holder}" if holder.isdigit() else "another process") from None
            time.sleep(0.05)
            continue
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file as it released it: lock the one at ``path``
    try:
        # the pid, padded to a fixed width: written over what a killed holder left, never truncating the file
        os.pwrite(fd, str(os.getpid()).ljust(PID_WIDTH).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing the descriptor releases the lock
