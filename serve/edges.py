"""The edges of the HTTP server, one ASGI middleware in front of every route: an optional API key, a request id,
and one access-log line per request.

- **API key** (``--api-key`` / ``GANRT_API_KEY``): every route but the public groups (``health``: the two
  ``/v2/health/*`` probes; ``page``: the seed explorer's files; ``metrics``: ``/metrics``) needs
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time (``secrets.compare_digest``);
  otherwise 401 with ``WWW-Authenticate: Bearer``.
- **Request id**: a client's ``X-Request-ID`` (printable ASCII without spaces, at most 128 characters) is kept,
  anything else replaced by a fresh one; it is echoed in the answer's ``X-Request-ID`` and carried by every log
  line written while the request is handled (a ``contextvars`` variable and a logging filter).
- **Access log**: one line per request at info level on the ``ganrt.access`` logger (client, method, path,
  status, bytes, milliseconds, request id); ``configure_logging`` writes every line as text or as one JSON
  object (``--log-format json``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("ganrt_request_id", default="-")
REQUEST_ID_PATTERN = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no space
PUBLIC_PATHS: dict[str, Callable[[str], bool]] = {
    "health": lambda path: path in ("/v2/health/live", "/v2/health/ready"),
    "metrics": lambda path: path == "/metrics",
    "page": lambda path: path == "/" or path.startswith("/static/"),
}
access_log = logging.getLogger("ganrt.access")


def request_id(headers: Headers) -> str:
    given = headers.get("x-request-id")
    return given if given is not None and REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex


def authorized(headers: Headers, key: bytes) -> bool:
    """Whether the request carries ``key`` as a bearer token or an X-API-Key, compared in constant time."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    offered = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
    return secrets.compare_digest(offered.encode("utf-8", "surrogateescape"), key)


class Edges:
    """ASGI middleware: API key, request id and access log around ``app`` (see the module's docstring)."""

    def __init__(self, app, *, api_key: str | None, public: tuple[str, ...], log_access: bool = True,
                 on_refused: Callable[[int], None] = lambda status: None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.public = [PUBLIC_PATHS[group] for group in public]
        self.log_access = log_access
        self.on_refused = on_refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # a request's deadline counts from here, before its body is read
        scope.setdefault("state", {})["arrived"] = asyncio.get_running_loop().time()
        headers = Headers(scope=scope)
        rid = request_id(headers)
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        answer = {"status": 0, "bytes": 0}

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            path = scope["path"]
            if self.key is not None and not any(open_(path) for open_ in self.public) \
                    and not authorized(headers, self.key):
                self.on_refused(401)
                refusal = JSONResponse({"error": "this server needs an API key: send 'Authorization: Bearer KEY' "
                                                 "or 'X-API-Key: KEY'"}, status_code=401,
                                       headers={"WWW-Authenticate": 'Bearer realm="ganrt"'})
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if self.log_access:
                client = scope.get("client") or ("-", 0)
                ms = (time.perf_counter() - started) * 1e3
                access_log.info('%s "%s %s" %s %d B %.1f ms', client[0], scope["method"], scope["path"],
                                answer["status"] or "-", answer["bytes"], ms,
                                extra={"client": client[0], "method": scope["method"], "path": scope["path"],
                                       "status": answer["status"] or None, "bytes": answer["bytes"],
                                       "duration_ms": round(ms, 3)})
            REQUEST_ID.reset(token)


# -- log lines ------------------------------------------------------------------------------------------------
ACCESS_FIELDS = ("client", "method", "path", "status", "bytes", "duration_ms")


class RequestIdFilter(logging.Filter):
    """Every record gets ``request_id``: the request being handled in this task, or '-'."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and an access line's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
                "request_id": getattr(record, "request_id", "-")}
        line.update({k: getattr(record, k) for k in ACCESS_FIELDS if hasattr(record, k)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(level: str, fmt: str) -> None:
    """The root logger (ganrt's and uvicorn's lines alike) at ``level``, as ``fmt`` ('text' or 'json')."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []  # through the root handler, in the same format
        logging.getLogger(name).propagate = True
    uvicorn_access = logging.getLogger("uvicorn.access")  # Edges writes the access lines, with the request id
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False
