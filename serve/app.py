"""The ASGI app of ``ganrt serve`` (Starlette): OIP v2, /v1/generate, /metrics and the seed explorer page.

    create_app(Service("bundle/", ServeOptions(...)))   # run with uvicorn, or httpx's ASGI transport

The routes read the service only through its front-facing members (``Service`` documents them), so the Ray
ingress serves the same routes with a model that lives in Ray replicas (``ray_deployments.RayFrontend``).

Every error is a JSON ``{"error": message}``: 400 for a bad request (the GanrtError's message), 404 for an
unknown model or route, 413 for a body over ``max_body_bytes``, 503 with ``Retry-After`` when the queue is
full, the model is not ready yet or the server is draining, 500 when the backend failed (that batch's
requests only; the server stays up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ganrt import __version__
from ganrt.errors import ConfigError, GanrtError, InputError
from ganrt.serve import encode, protocol
from ganrt.serve.batcher import QueueFull, ShuttingDown
from ganrt.serve.service import Service

if TYPE_CHECKING:
    from ganrt.serve.ray_deployments import RayFrontend

log = logging.getLogger("ganrt.serve")
STATIC = {"": ("index.html", "text/html; charset=utf-8"), "explorer.js": ("explorer.js", "text/javascript"),
          "explorer.css": ("explorer.css", "text/css")}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def _status(e: Exception) -> tuple[int, dict[str, str]]:
    if isinstance(e, HTTPError):
        return e.status, e.headers
    if isinstance(e, (QueueFull, ShuttingDown)):
        return 503, {"Retry-After": "1"}
    if isinstance(e, (InputError, ConfigError)):
        return 400, {}
    return 500, {}


def failure(service: Service | RayFrontend, e: Exception) -> tuple[int, dict[str, str], str]:
    """(HTTP status, headers, message) of a failed request, counted in the metrics: the answer of the routes,
    and of the gRPC service (``grpc_service``) as a status code."""
    status, headers = _status(e)
    if status == 500 and not isinstance(e, GanrtError):
        log.exception("internal error")
        message = f"internal error ({type(e).__name__}: {e})"
    else:
        message = str(e)
    if service.metrics is not None:
        service.metrics.errors.labels(str(status)).inc()
    return status, headers, message


def check_ready(service: Service | RayFrontend) -> None:
    if not service.ready:
        why = f": {service.failure}" if service.failure else " (warming up)"
        raise HTTPError(503, f"the model is not ready{why}", {"Retry-After": "1"})


def check_model(service: Service | RayFrontend, name: str) -> None:
    if not service.loaded or name != service.options.model_name:
        known = service.options.model_name if service.loaded else "none yet"
        raise HTTPError(404, f"unknown model {name!r}; this server serves {known!r}")


def create_app(service: Service | RayFrontend) -> Starlette:
    """The app around ``service``; its lifespan starts the service (warm-up, then ready) and drains it."""

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.get_running_loop().create_task(service.start())  # live at once, ready after warm-up
        try:
            yield
        finally:
            try:
                await task
            except Exception:  # noqa: BLE001 - a start failure was logged; drain what exists
                pass
            await service.stop()

    def error(e: Exception) -> Response:
        status, headers, message = failure(service, e)
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:  # noqa: BLE001 - every failure becomes a JSON answer
                return error(e)
        return endpoint

    async def body(request: Request) -> bytes:
        limit = service.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes is over this server's limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body is over this server's limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def need_ready() -> None:
        check_ready(service)

    def need_model(request: Request) -> None:
        check_model(service, request.path_params["name"])

    async def off_loop(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(service.executor, fn, *args)

    # -- /v1 ---------------------------------------------------------------------------------------
    async def v1_generate(request: Request) -> Response:
        t0 = time.perf_counter()
        need_ready()
        work, fmt = protocol.parse_v1(await body(request), service.spec, service.options.max_seeds_per_request)
        images = await service.submit(work)
        t1 = time.perf_counter()
        data = await off_loop(lambda: encode.encode(fmt, images, work, bundle_sha256=service.bundle_sha256,
                                                    variant=service.variant))
        service.metrics.answered("v1", work.n, started=t0, encoding_started=t1)
        return Response(data, media_type=encode.MEDIA_TYPES[fmt],
                        headers={"X-Ganrt-Variant": service.variant})

    async def v1_model(request: Request) -> Response:
        if not service.loaded:
            raise HTTPError(503, "the model is loading", {"Retry-After": "1"})
        return JSONResponse(service.describe())

    # -- Open Inference Protocol v2 ----------------------------------------------------------------
    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "ganrt", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        need_ready()
        return JSONResponse({"ready": True})

    async def model_metadata(request: Request) -> Response:
        need_model(request)
        return JSONResponse(protocol.model_metadata(service.options.model_name, service.spec, service.platform))

    async def model_ready(request: Request) -> Response:
        need_model(request)
        need_ready()
        return JSONResponse({"name": service.options.model_name, "ready": True})

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        need_model(request)
        need_ready()
        work, opts = protocol.parse_v2(await body(request), request.headers.get(protocol.HEADER_LENGTH),
                                       service.spec, service.options.max_seeds_per_request)
        images = await service.submit(work)
        t1 = time.perf_counter()
        data, headers = await off_loop(lambda: protocol.v2_response(
            images, model_name=service.options.model_name, request_id=opts["id"], binary=opts["binary"]))
        service.metrics.answered("v2", work.n, started=t0, encoding_started=t1)
        return Response(data, headers=headers)

    # -- metrics and the page ----------------------------------------------------------------------
    async def metrics(request: Request) -> Response:
        if service.metrics is None:
            raise HTTPError(503, "the model is loading", {"Retry-After": "1"})
        data, content_type = service.metrics.exposition()
        return Response(data, media_type=content_type)

    async def static(request: Request) -> Response:
        name = request.path_params.get("file", "")
        if name not in STATIC:
            raise HTTPError(404, f"no page {request.url.path!r}")
        file, media = STATIC[name]
        return Response(resources.files("ganrt.serve").joinpath("static", file).read_bytes(), media_type=media)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(HTTPError(404, f"no route {request.method} {request.url.path}"))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(HTTPError(405, f"{request.method} is not allowed on {request.url.path}"))

    routes = [
        Route("/", guarded(static), methods=["GET"]),
        Route("/static/{file}", guarded(static), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/v1/generate", guarded(v1_generate), methods=["POST"]),
        Route("/v1/model", guarded(v1_model), methods=["GET"]),
        Route("/v2", guarded(server_metadata), methods=["GET"]),
        Route("/v2/health/live", guarded(live), methods=["GET"]),
        Route("/v2/health/ready", guarded(ready), methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, guarded(model_metadata), methods=["GET"]),
                   Route(prefix + "/ready", guarded(model_ready), methods=["GET"]),
                   Route(prefix + "/infer", guarded(infer), methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
