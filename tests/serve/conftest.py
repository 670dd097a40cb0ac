"""Serve fixtures: the app of the tiny bundle, driven in-process through httpx's ASGI transport (lifespan run),
and a real uvicorn server on 127.0.0.1 in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ganrt.serve import ServeOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InProcess:
    """Run coroutines against the app with its lifespan (start: load + warm-up; stop: drain)."""

    def __init__(self, bundle, options: ServeOptions) -> None:
        from ganrt.serve.app import create_app
        from ganrt.serve.service import Service

        self.service = Service(bundle, options)
        self.app = create_app(self.service)

    def run(self, fn):
        async def main():
            async with self.app.router.lifespan_context(self.app):
                for _ in range(200):
                    if self.service.ready or self.service.failure:
                        break
                    await asyncio.sleep(0.05)
                transport = httpx.ASGITransport(app=self.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                    return await fn(client)

        return asyncio.run(main())


@pytest.fixture
def inprocess(bundle_dir):
    def make(**options):
        return InProcess(bundle_dir, ServeOptions(**options))
    return make


class Server:
    """`ganrt serve BUNDLE` as a subprocess on a free port; ready when /v2/health/ready answers 200."""

    def __init__(self, bundle, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "ganrt", "serve", str(bundle), "--port", str(self.port),
                                      "--threads", "1", "--log-level", "warning", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ganrt serve exited: {self.proc.stdout.read().decode()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("ganrt serve did not become ready in 120 s")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read().decode()


@pytest.fixture
def server(bundle_dir):
    started = []

    def make(*args: str) -> Server:
        s = Server(bundle_dir, *args)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
