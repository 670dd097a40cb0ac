"""Serving: ``ganrt serve BUNDLE`` runs one Generator behind an asyncio dynamic batcher on an ASGI app.

    from ganrt.serve import Service, ServeOptions, create_app
    app = create_app(Service("bundle/", ServeOptions(max_batch=64, max_delay_ms=5)))   # uvicorn app

Routes: the Open Inference Protocol v2 (``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>``,
``/v2/models/<name>/infer``, with the binary-data extension), ``/v1/generate`` (seeds in; npy, PNG or zip
out), ``/metrics`` (Prometheus) and a seed-explorer page at ``/``. ``ganrt loadtest URL`` measures any server
that speaks these protocols. Starlette, uvicorn and prometheus_client are the ``serve`` extra, imported only
here.
"""

from ganrt.serve.options import ServeOptions

__all__ = ["ServeOptions", "Service", "create_app"]


def __getattr__(name):  # Service and create_app import Starlette: only when asked for
    if name == "Service":
        from ganrt.serve.service import Service

        return Service
    if name == "create_app":
        from ganrt.serve.app import create_app

        return create_app
    raise AttributeError(name)
