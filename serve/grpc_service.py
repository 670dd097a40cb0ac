"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``) beside ``ganrt serve``'s HTTP app.

    ganrt serve bundle --grpc-port 8001
    attach(app, service, host="127.0.0.1", port=8001)   # the gRPC server lives as long as the app's lifespan

One ``grpc.aio`` server on the app's event loop, so it shares the ``Service`` of the HTTP routes: the same
batcher (its batches mix HTTP and gRPC requests), metrics (``protocol="grpc"``) and drain. It reads the model only
through the members the routes read (``ready``, ``loaded``, ``spec``, ``options``, ``metrics``, ``executor``,
``submit``) and parses requests with the checks of the HTTP v2 path (``protocol.parse_v2_request``): a request's
typed ``contents`` and its ``raw_input_contents`` become that path's ``data`` and binary tail.

RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig (the HTTP route's
``protocol.model_config``, as Triton's message) and ModelInfer (images as ``raw_output_contents``); the others answer
UNIMPLEMENTED. Errors are gRPC status codes with the message the HTTP route would send: 400 INVALID_ARGUMENT,
401 UNAUTHENTICATED (``--api-key``: metadata ``authorization: Bearer KEY`` or ``x-api-key``), 404 NOT_FOUND,
503 UNAVAILABLE (not ready, queue full, draining), 504 DEADLINE_EXCEEDED (the client's gRPC deadline, the OIP
``timeout`` parameter or the server's request timeout: its queued work dropped), 500 INTERNAL. A client that
cancels drops its queued work, as an HTTP client that disconnects. The generated stubs and messages
are tritonclient's (``tritonclient.grpc.service_pb2[_grpc]``), the ``triton`` extra.

Stopping: the app's lifespan stops this server first (no new RPCs; those in flight finish, up to ``GRACE_S``),
then the service drains.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ganrt import __version__
from ganrt.errors import BackendUnavailable, ConfigError, InputError
from ganrt.serve import protocol

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ganrt.serve.service import Service

GRACE_S = 60.0
# an OIP datatype -> the InferTensorContents field that carries it (FP16 and BF16 travel raw only)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}
HTTP_TO_GRPC = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 500: "INTERNAL"}
HEALTH_RPCS = ("ServerLive", "ServerReady")  # open without the API key when "health" is public


def stubs():
    """(service_pb2, service_pb2_grpc, model_config_pb2) from tritonclient, or BackendUnavailable."""
    try:
        from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
    except ImportError as e:
        raise BackendUnavailable(f"--grpc-port needs grpcio and tritonclient's OIP stubs ({e}): "
                                 "pip install 'ganrt[triton]'") from None
    return service_pb2, service_pb2_grpc, model_config_pb2


def v2_request(request) -> tuple[dict[str, Any], bytes]:
    """A ModelInferRequest as the HTTP v2 path's (JSON header, binary tail): typed contents as ``data``,
    ``raw_input_contents`` (one per input, in order) as ``binary_data_size`` inputs."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InputError(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: send one "
                         "per input, or typed contents in each input instead")
    params = {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in request.parameters.items()
              if p.WhichOneof("parameter_choice")}
    inputs = []
    for i, tensor in enumerate(request.inputs):
        inp: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            if tensor.HasField("contents"):
                raise InputError(f"input {tensor.name}: give its data as contents or in raw_input_contents, "
                                 "not both")
            inp["parameters"] = {"binary_data_size": len(raw[i])}
        elif tensor.HasField("contents") and tensor.datatype in CONTENTS:
            inp["data"] = np.asarray(getattr(tensor.contents, CONTENTS[tensor.datatype]))
        inputs.append(inp)
    head = {"id": request.id, "inputs": inputs, "outputs": [{"name": o.name} for o in request.outputs],
            "parameters": params}
    return head, b"".join(raw)


def servicer(service: Service):
    """The GRPCInferenceService of ``service``."""
    import grpc
    from google.protobuf import json_format

    from ganrt.serve.app import HTTPError, check_model, check_ready, failure

    pb, pb_grpc, config_pb2 = stubs()

    class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
        async def _fail(self, context, e: Exception) -> None:
            """Abort the RPC with the status the HTTP route would answer, as a gRPC code, and its message."""
            status, _, message = failure(service, e)
            await context.abort(getattr(grpc.StatusCode, HTTP_TO_GRPC.get(status, "UNKNOWN")), message)

        async def _submit(self, work, context, asked_s: float | None) -> np.ndarray:
            """The one call into the batcher: the deadline is the server's request timeout, the client's gRPC
            deadline or the OIP ``timeout`` parameter, whichever comes first; a client that cancels (or goes away)
            cancels this task, which drops the request's queued work."""
            limits = [t for t in (service.options.request_timeout_s, context.time_remaining(), asked_s) if t]
            deadline = asyncio.get_running_loop().time() + min(limits) if limits else None
            return await service.submit(work, deadline=deadline)

        async def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request, context):
            if service.ready and not service.healthy:
                service.probe()  # as the HTTP readiness route: a probe makes it ready once the backend recovers
            return pb.ServerReadyResponse(ready=bool(service.ready and service.healthy))

        async def ModelReady(self, request, context):
            try:
                check_model(service, request.name)
            except HTTPError as e:
                await self._fail(context, e)
            return pb.ModelReadyResponse(ready=bool(service.ready and service.healthy))

        async def ServerMetadata(self, request, context):
            return pb.ServerMetadataResponse(name="ganrt", version=__version__, extensions=["model_configuration"])

        async def ModelMetadata(self, request, context):
            try:
                check_model(service, request.name)
            except HTTPError as e:
                await self._fail(context, e)
            meta = protocol.model_metadata(service.options.model_name, service.spec, service.platform)
            return json_format.ParseDict(meta, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

        async def ModelConfig(self, request, context):
            try:
                check_model(service, request.name)
            except HTTPError as e:
                await self._fail(context, e)
            o = service.options
            config = json_format.ParseDict(protocol.model_config(o.model_name, service.spec, o,
                                                                 platform=service.platform, device=service.device,
                                                                 variant=service.variant), config_pb2.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        async def ModelInfer(self, request, context):
            t0 = time.perf_counter()
            try:
                check_model(service, request.model_name)
                check_ready(service)
                head, binary = v2_request(request)
                work, opts = protocol.parse_v2_request(head, binary, service.spec,
                                                       service.options.max_seeds_per_request)
                images = await self._submit(work, context, opts["timeout_s"])
            except Exception as e:  # noqa: BLE001 - every failure becomes a status code
                await self._fail(context, e)
            t1 = time.perf_counter()
            raw = await asyncio.get_running_loop().run_in_executor(service.executor,
                                                                   np.ascontiguousarray(images).tobytes)
            response = pb.ModelInferResponse(
                model_name=service.options.model_name, model_version="1", id=request.id,
                outputs=[pb.ModelInferResponse.InferOutputTensor(name="images", datatype="UINT8",
                                                                 shape=list(images.shape))],
                raw_output_contents=[raw])
            service.metrics.answered("grpc", work.n, started=t0, encoding_started=t1)
            return response

    return InferenceService(), pb_grpc


def api_key_interceptor(key: str, open_rpcs: tuple[str, ...]):
    """The HTTP server's API key on gRPC: metadata ``authorization: Bearer KEY`` or ``x-api-key: KEY``
    (constant-time compare); without it every RPC but ``open_rpcs`` answers UNAUTHENTICATED."""
    import grpc
    from starlette.datastructures import Headers

    from ganrt.serve.edges import authorized

    async def refuse(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server needs an API key: send metadata "
                            "'authorization: Bearer KEY' or 'x-api-key: KEY'")

    class ApiKey(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            metadata = Headers({k: v for k, v in details.invocation_metadata or () if isinstance(v, str)})
            if details.method.rsplit("/", 1)[-1] in open_rpcs or authorized(metadata, key.encode()):
                return await continuation(details)
            return grpc.unary_unary_rpc_method_handler(refuse)

    return ApiKey()


async def start(service: Service, host: str, port: int):
    """A started grpc.aio server of ``service`` on host:port (ConfigError when the port cannot be bound)."""
    import grpc

    handler, pb_grpc = servicer(service)
    limit = service.options.max_body_bytes
    key = service.options.api_key or os.environ.get("GANRT_API_KEY") or None
    open_rpcs = HEALTH_RPCS if "health" in service.options.public else ()
    interceptors = [api_key_interceptor(key, open_rpcs)] if key else []
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1)], interceptors=interceptors)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(handler, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"gRPC cannot listen on {address} ({e}): is the port taken?") from None
    if not bound:
        raise ConfigError(f"gRPC cannot listen on {address}: is the port taken?")
    await server.start()
    return server


def attach(app: Starlette, service: Service, *, host: str, port: int) -> None:
    """Serve gRPC on host:port for as long as ``app``'s lifespan runs: started after the app's own startup,
    stopped before its shutdown drains the service."""
    stubs()  # fail before anything starts without them
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            server = await start(service, host, port)
            try:
                yield state
            finally:
                await server.stop(GRACE_S)

    app.router.lifespan_context = lifespan
