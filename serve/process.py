"""`ganrt serve` as a child process on a free port of 127.0.0.1, for the demo, tools/ and the tests.

    with ServeProcess(bundle, ["--max-batch", "16"]) as server:  # returns once /v2/health/ready answers 200
        loadtest(server.url, concurrency=[8])
    # leaving the block: SIGTERM (the server drains), then a kill if it has not exited in time

Its output is collected by a reader thread (``output``) unless ``capture=False`` leaves it on the terminal.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, wait: float = 60.0) -> None:
    """SIGTERM (a server answers what it accepted, then exits); a kill when it has not exited after ``wait`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether the server at ``url`` answers its readiness route with 200 (``context``: for HTTPS)."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2, context=context) as r:
            return r.status == 200
    except OSError:  # refused, not bound yet, or an HTTP error status (503 while warming up)
        return False


class ServeProcess:
    """``ganrt serve BUNDLE --port <free> --log-level warning *args``, started and waited for until ready."""

    # the command line: `ganrt <command> BUNDLE <port_option> <port> *default_args *args` (``ganrt triton``'s
    # subclass: triton_server.TritonProcess)
    command, port_option, default_args = "serve", "--port", ("--log-level", "warning")

    def __init__(self, bundle: str | os.PathLike, args: Sequence[str] = (), *, timeout: float = 120.0,
                 capture: bool = True, port: int | None = None, stop_wait: float = 60.0,
                 cafile: str | os.PathLike | None = None) -> None:
        """``cafile``: the CA that signed the server's certificate, when ``args`` has ``--ssl-certfile``."""
        self.port = port or free_port()
        self.stop_wait = stop_wait  # how long stop() lets it drain before a kill
        https = "--ssl-certfile" in args
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None) if https else None
        self.argv = [sys.executable, "-m", "ganrt", self.command, str(Path(bundle)), self.port_option, str(self.port),
                     *self.default_args, *args]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(self.argv, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     stdout=subprocess.PIPE if capture else None,
                                     stderr=subprocess.STDOUT if capture else None)
        self._reader = None
        if capture:
            self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
            self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready(self.url, context):
            if self.proc.poll() is not None:
                raise RuntimeError(f"ganrt {self.command} exited with status {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ganrt {self.command} did not become ready in {timeout:g} s:\n{self.output}")
            time.sleep(0.2)

    @property
    def output(self) -> str:
        """What the server printed so far (everything, once it has exited)."""
        if self._reader is not None and self.proc.poll() is not None:
            self._reader.join(5)
        return "".join(self.lines)

    def terminate(self) -> None:
        """Send SIGTERM and return at once (the server drains, then exits)."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> str:
        """Stop the server (see :func:`stop`); its output."""
        stop(self.proc, self.stop_wait)
        return self.output

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
