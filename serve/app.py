"""The ASGI app of ``ganrt serve`` (Starlette): OIP v2, /v1/generate, /metrics and the seed explorer page.

    create_app(Service("bundle/", ServeOptions(...)))   # run with uvicorn, or httpx's ASGI transport

The routes read the service only through its front-facing members (``Service`` documents them), so the Ray
ingress serves the same routes with a model that lives in Ray replicas (``ray_deployments.RayFrontend``).
``edges.Edges`` stands in front of every route: API key, request id, access log.

Every error is a JSON ``{"error": message}``: 400 for a bad request (the GanrtError's message), 401 without
the API key, 404 for an unknown model, version or route, 405 (with ``Allow``) for a wrong method, 413 for a
body over ``max_body_bytes``, 503 with ``Retry-After`` when the queue is full, the model is not ready yet or
the server is draining, 504 when a request's deadline passed (its queued work dropped), 500 only when the
backend failed (that batch's requests; the server stays up). A request whose client disconnects is dropped
from the queue (never computed if its batch had not started). A deadline is the server's
``request_timeout_s``, or less when the client asks (``X-Request-Timeout`` in seconds, or the OIP ``timeout``
parameter in microseconds, as Triton's clients send it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ganrt import __version__
from ganrt.errors import ConfigError, GanrtError, InputError
from ganrt.serve import encode, protocol
from ganrt.serve.batcher import DeadlineExceeded, QueueFull, ShuttingDown
from ganrt.serve.edges import Edges
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


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready (its queued work was dropped)."""


STATUS = ((QueueFull, 503), (ShuttingDown, 503), (DeadlineExceeded, 504), (InputError, 400),
          (ConfigError, 400), (ClientGone, 499))  # 499: nginx's "client closed request"; nobody reads it


def _status(e: Exception) -> tuple[int, dict[str, str]]:
    if isinstance(e, HTTPError):
        return e.status, e.headers
    status = next((code for kind, code in STATUS if isinstance(e, kind)), 500)
    return status, {"Retry-After": "1"} if status == 503 else {}


def _timeout_header(request: Request) -> float | None:
    """``X-Request-Timeout`` in seconds, or None; 400 for anything but a positive number."""
    text = request.headers.get("x-request-timeout")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise InputError(f"X-Request-Timeout must be a number of seconds in (0, 86400], got {text[:40]!r}")
    return seconds


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read: the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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


def check_model(service: Service | RayFrontend, name: str, version: str | None = None) -> None:
    """404 unless ``name`` is this server's model (and ``version``, when a route names one, its version 1)."""
    if not service.loaded or name != service.options.model_name:
        known = service.options.model_name if service.loaded else "none yet"
        raise HTTPError(404, f"unknown model {name[:100]!r}; this server serves {known!r}")
    if version and version != "1":
        raise HTTPError(404, f"model {name!r} has no version {version[:40]!r}; it has version 1")


def create_app(service: Service | RayFrontend, *, on_start_failure=None) -> Starlette:
    """The app around ``service``; its lifespan starts the service (warm-up, then ready) and drains it.
    ``on_start_failure()`` is called when the start fails (``ganrt serve`` then stops and exits non-zero)."""
    options = service.options

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.get_running_loop().create_task(service.start())  # live at once, ready after warm-up
        if on_start_failure is not None:
            task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or on_start_failure())
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
        check_model(service, request.path_params["name"], request.path_params.get("version"))

    async def off_loop(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(service.executor, fn, *args)

    async def compute(request: Request, work, asked_s: float | None):
        """The images of ``work``: dropped from the queue when the client goes away (ClientGone) or the
        deadline passes (DeadlineExceeded), counted from the request's arrival."""
        limits = [t for t in (service.options.request_timeout_s, asked_s, _timeout_header(request)) if t]
        deadline = request.state.arrived + min(limits) if limits else None
        if await request.is_disconnected():  # gone while its body was read: queue nothing
            raise ClientGone("the client disconnected before its request was queued")
        loop = asyncio.get_running_loop()
        images = loop.create_task(service.submit(work, deadline=deadline))
        gone = loop.create_task(_disconnected(request))
        try:
            await asyncio.wait({images, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not images.done():
                images.cancel()  # the client went away, or this handler was cancelled
            gone.cancel()
        if not images.done() or images.cancelled():
            raise ClientGone("the client disconnected before its images were ready")
        return images.result()

    # -- /v1 ---------------------------------------------------------------------------------------
    async def v1_generate(request: Request) -> Response:
        t0 = time.perf_counter()
        need_ready()
        work, fmt = protocol.parse_v1(await body(request), service.spec, service.options.max_seeds_per_request)
        images = await compute(request, work, None)
        t1 = time.perf_counter()
        data = await off_loop(lambda: encode.encode(fmt, images, work.with_labels(service.spec.num_classes),
                                                    bundle_sha256=service.bundle_sha256, variant=service.variant))
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

    def need_healthy() -> None:
        need_ready()
        if not service.healthy:
            service.probe()  # one image through the batcher: ready again as soon as the backend recovers
            raise HTTPError(503, f"the model is not ready: its last {service.failed_batches} batches failed "
                                 "(a probe retries it)", {"Retry-After": "1"})

    async def ready(request: Request) -> Response:
        need_healthy()
        return JSONResponse({"ready": True})

    async def model_metadata(request: Request) -> Response:
        need_model(request)
        return JSONResponse(protocol.model_metadata(service.options.model_name, service.spec, service.platform))

    async def model_config(request: Request) -> Response:
        need_model(request)
        return JSONResponse(protocol.model_config(service.options.model_name, service.spec, service.options,
                                                  platform=service.platform, device=service.device,
                                                  variant=service.variant))

    async def model_ready(request: Request) -> Response:
        need_model(request)
        need_healthy()
        return JSONResponse({"name": service.options.model_name, "ready": True})

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        need_model(request)
        need_ready()
        work, opts = protocol.parse_v2(await body(request), request.headers.get(protocol.HEADER_LENGTH),
                                       service.spec, service.options.max_seeds_per_request)
        images = await compute(request, work, opts["timeout_s"])
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
        # RFC 9110: a 405 names the methods the route takes (Starlette's exception carries them, unordered)
        allowed = ", ".join(sorted(m.strip() for m in (getattr(exc, "headers", None) or {}).get("Allow", "").split(",")
                                   if m.strip()))
        return error(HTTPError(405, f"{request.method} is not allowed on {request.url.path}; use {allowed}",
                               {"Allow": allowed}))

    routes = [
        Route("/", guarded(static), methods=["GET"]),
        Route("/static/{file}", guarded(static), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/v1/generate", guarded(v1_generate), methods=["POST"]),
        Route("/v1/model", guarded(v1_model), methods=["GET"]),
        Route("/v2", guarded(server_metadata), methods=["GET"]),
        Route("/v2/", guarded(server_metadata), methods=["GET"]),  # the OIP document's own spelling
        Route("/v2/health/live", guarded(live), methods=["GET"]),
        Route("/v2/health/ready", guarded(ready), methods=["GET"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, guarded(model_metadata), methods=["GET"]),
                   Route(prefix + "/ready", guarded(model_ready), methods=["GET"]),
                   Route(prefix + "/config", guarded(model_config), methods=["GET"]),
                   Route(prefix + "/infer", guarded(infer), methods=["POST"])]

    def refused(status: int) -> None:
        if service.metrics is not None:
            service.metrics.errors.labels(str(status)).inc()

    edges = Middleware(Edges, api_key=options.api_key or os.environ.get("GANRT_API_KEY") or None,
                       public=tuple(options.public), log_access=options.access_log, on_refused=refused)
    return Starlette(routes=routes, lifespan=lifespan, middleware=[edges],
                     exception_handlers={404: not_found, 405: not_allowed})
