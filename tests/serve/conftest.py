"""Serve fixtures: the app of the tiny bundle, driven in-process through httpx's ASGI transport (lifespan run),
and a real uvicorn server on 127.0.0.1 in a subprocess."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from ganrt.serve import ServeOptions
from ganrt.serve.process import ServeProcess


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


@pytest.fixture
def server(bundle_dir):
    started = []

    def make(*args: str) -> ServeProcess:
        s = ServeProcess(bundle_dir, ["--threads", "1", *args])
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def offline(bundle_dir):
    """The variant a server of the tiny bundle picks, generating offline."""
    from ganrt.runtime import load

    with load(bundle_dir) as gen:
        yield gen


def _oip_inputs(module, **arrays):
    """InferInputs of a Triton client module (tritonclient.http or .grpc) holding ``arrays`` (FP32/INT64)."""
    out = []
    for name, a in arrays.items():
        out.append(module.InferInput(name, list(a.shape), {np.float32: "FP32", np.int64: "INT64"}[a.dtype.type]))
        out[-1].set_data_from_numpy(a)
    return out


@pytest.fixture(scope="session")
def oip_inputs():
    """``oip_inputs(tritonclient.grpc, seeds=..., labels=...)`` -> the InferInputs of a Triton client."""
    return _oip_inputs
