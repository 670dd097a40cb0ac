"""A bundle as a Ray Serve application: the routes of ``ganrt serve`` on a Ray cluster, scaled by Ray.

    ganrt serve bundle --ray --replicas 2 --num-cpus 1          # start a local cluster (or --address to join one)
    serve.run(ganrt.serve.ray.app("bundle/", ray_options=RayOptions(replicas=2)))    # from Python
    serve run ganrt.serve.ray:build bundle=/abs/bundle replicas=2                     # Ray's own CLI
    ganrt serve-config bundle --ray --autoscale 1:4 > serve.yaml; serve deploy serve.yaml   # an existing cluster

One ingress (the Starlette app of ``ganrt serve``: /v1/generate, OIP v2, /metrics, the page) and N model
replicas, each a ``Service`` batching with ``@serve.batch`` (``ray_deployments``). Every replica resolves its
batching like ``ganrt serve`` (the tuning record of its variant on its machine, else 64 images / 5 ms).
The bundle's path must be readable on every node that runs a replica (a shared filesystem, or the same path).
Ray is the optional ``ray`` extra; ``ray_deployments`` (which imports it) is loaded only by ``app``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ganrt.errors import BackendUnavailable, ConfigError
from ganrt.serve.options import DEFAULT_MAX_BATCH, ServeOptions, check

INSTALL_HINT = "pip install 'ganrt[ray]'"
IMPORT_PATH = "ganrt.serve.ray:build"
MAX_INFLIGHT = 2  # = ray_deployments.MAX_INFLIGHT (that module imports Ray): batches a replica computes at once


@dataclass(frozen=True)
class RayOptions:
    """How the model deployment scales; the serving options themselves are ``ServeOptions``."""

    replicas: int = 1  # fixed replica count (ignored with autoscale)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, Ray's autoscaler in between
    num_cpus: float = 1.0  # CPUs each model replica reserves (its backend threads default to this)
    num_gpus: float = 0.0  # GPUs each model replica reserves (fractions share a GPU)
    address: str | None = None  # a running cluster to join (None: start a local one)

    def but(self, **changes: Any) -> "RayOptions":
        return dataclasses.replace(self, **changes)


def require_ray():
    """The ray module with Ray Serve importable, or BackendUnavailable saying what to install."""
    try:
        import ray
        import ray.serve  # noqa: F401 - fails without the serve extra's dependencies
    except ImportError as e:
        raise BackendUnavailable(f"--ray needs Ray Serve, which is not installed ({e}): {INSTALL_HINT}") from None
    return ray


def parse_autoscale(text: str | list | tuple) -> tuple[int, int]:
    """'1:4' (or [1, 4]) -> (1, 4); ConfigError unless 0 <= MIN <= MAX and MAX >= 1."""
    try:
        lo, hi = (int(v) for v in (text.split(":") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        raise ConfigError(f"--autoscale must look like MIN:MAX replicas, e.g. 1:4; got {text!r}") from None
    if not 0 <= lo <= hi or hi < 1:
        raise ConfigError(f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1; got {lo}:{hi}")
    return lo, hi


def check_ray(o: RayOptions) -> None:
    if isinstance(o.replicas, bool) or not isinstance(o.replicas, int) or o.replicas < 1:
        raise ConfigError(f"replicas must be an integer >= 1, got {o.replicas!r}")
    if o.autoscale is not None:
        parse_autoscale(o.autoscale)
    for name in ("num_cpus", "num_gpus"):
        value = getattr(o, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


def scaling(o: RayOptions) -> dict[str, Any]:
    """How the model deployment scales, as /v1/model reports it under "ray"."""
    count = {"autoscale": list(o.autoscale)} if o.autoscale else {"replicas": o.replicas}
    return {**count, "num_cpus": o.num_cpus, "num_gpus": o.num_gpus}


def deployment_options(options: ServeOptions, ray_options: RayOptions, bundle_max_batch: int) -> dict[str, dict]:
    """Ray Serve options of the two deployments, {"Model": ..., "Ingress": ...}.

    A replica resolves its batch size once loaded (at most the bundle's max batch), so the limits here use
    that bound: ``max_ongoing_requests`` (Ray's default of 5 would cap every batch at 5 requests) admits
    ``MAX_INFLIGHT`` full batches of one-image requests computing and one forming; autoscaling aims at one
    full batch waiting per replica; ``max_queue`` becomes ``max_queued_requests``, the requests the ingress
    holds while every replica is full (beyond them: 503, as ``ganrt serve``).
    """
    batch = min(options.max_batch or bundle_max_batch, bundle_max_batch)
    per_replica = batch * (MAX_INFLIGHT + 1)
    model: dict[str, Any] = {"max_ongoing_requests": per_replica, "max_queued_requests": options.max_queue,
                             "ray_actor_options": {"num_cpus": ray_options.num_cpus,
                                                   "num_gpus": ray_options.num_gpus},
                             "graceful_shutdown_timeout_s": 60}
    if ray_options.autoscale:
        lo, hi = parse_autoscale(ray_options.autoscale)
        model["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi, "target_ongoing_requests": batch}
        most = hi
    else:
        model["num_replicas"] = ray_options.replicas
        most = ray_options.replicas
    # the ingress parses, encodes and waits (no model), like Ray's own HTTP proxy: it reserves no CPU
    ingress = {"num_replicas": 1, "max_ongoing_requests": options.max_queue + per_replica * most,
               "ray_actor_options": {"num_cpus": 0}, "graceful_shutdown_timeout_s": 60}
    return {"Model": model, "Ingress": ingress}


def _prepare(bundle, options: ServeOptions | None, ray_options: RayOptions | None):
    """(absolute bundle path, options, ray options, the deployments' options); a bad bundle or option fails here."""
    from ganrt.bundle import Bundle

    options = options or ServeOptions()
    ray_options = ray_options or RayOptions()
    check(options)
    check_ray(ray_options)
    path = Path(bundle).resolve()
    opened = Bundle.open(path)
    # a replica reserves num_cpus CPUs: its backend threads default to that, not to every core of the node
    options = options.but(threads=options.threads or max(1, int(ray_options.num_cpus)))
    deployments = deployment_options(options, ray_options, int(opened.graph.get("max_batch") or DEFAULT_MAX_BATCH))
    return path, options, ray_options, deployments


def app(bundle, options: ServeOptions | None = None, ray_options: RayOptions | None = None):
    """The Serve application of ``bundle`` (for ``serve.run``): an ingress and the model replicas."""
    require_ray()
    path, options, ray_options, deployments = _prepare(bundle, options, ray_options)
    from ganrt.serve.ray_deployments import Ingress, Model

    model = Model.options(**deployments["Model"]).bind(str(path), options)
    return Ingress.options(**deployments["Ingress"]).bind(model, str(path), options, scaling(ray_options))


# -- builder arguments: `serve run ganrt.serve.ray:build key=value ...` and the config of `serve deploy` ----------
def _coerce(value: Any, annotation: str, key: str) -> Any:
    """A value given as text (Ray's CLI passes key=value strings) as the type the field declares."""
    if not isinstance(value, str):
        return tuple(value) if annotation.startswith("tuple") and isinstance(value, list) else value
    if "None" in annotation and value.lower() in ("none", "null", ""):
        return None
    if annotation.startswith("tuple[str"):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        if annotation.startswith("int"):
            return int(value)
        if annotation.startswith("float"):
            return float(value)
        if annotation.startswith("bool"):
            return value.lower() in ("1", "true", "yes", "on")
        if annotation.startswith("tuple"):
            return parse_autoscale(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a valid {annotation.split(' ')[0]}") from None
    return value


def _fill(cls, values: dict[str, Any]):
    known = {f.name: f for f in fields(cls)}
    return cls(**{k: _coerce(v, str(known[k].type), k) for k, v in values.items()})


def build(args: dict[str, Any]):
    """Ray's application builder: ``{"bundle": PATH, "options": {ServeOptions}, "ray": {RayOptions}}``; flat
    keys (``replicas=2 max_batch=32``) go to whichever of the two has that field."""
    args = dict(args)
    bundle = args.pop("bundle", None)
    if not bundle:
        raise ConfigError("the builder needs bundle=PATH (the bundle's directory, readable on every node)")
    serve_values, ray_values = dict(args.pop("options", None) or {}), dict(args.pop("ray", None) or {})
    serve_fields = {f.name for f in fields(ServeOptions)} - {"tuning"}
    ray_fields = {f.name for f in fields(RayOptions)} - {"address"}
    for key, value in args.items():
        if key in serve_fields:
            serve_values[key] = value
        elif key in ray_fields:
            ray_values[key] = value
        else:
            raise ConfigError(f"unknown argument {key!r}; the builder takes bundle and "
                              f"{', '.join(sorted(serve_fields | ray_fields))}")
    for given, allowed, what in ((serve_values, serve_fields, "options"), (ray_values, ray_fields, "ray")):
        unknown = set(given) - allowed
        if unknown:
            raise ConfigError(f"unknown {what} {sorted(unknown)}; they are {', '.join(sorted(allowed))}")
    return app(bundle, _fill(ServeOptions, serve_values), _fill(RayOptions, ray_values))


def _changed(obj, skip: tuple[str, ...]) -> dict[str, Any]:
    """The fields of a dataclass that differ from their defaults, as YAML-friendly values."""
    default = type(obj)()
    return {f.name: list(v) if isinstance(v, tuple) else v for f in fields(obj)
            if f.name not in skip and (v := getattr(obj, f.name)) != getattr(default, f.name)}


def serve_config(bundle, options: ServeOptions | None = None, ray_options: RayOptions | None = None) -> dict:
    """The config file of ``serve deploy`` (Ray's ServeDeploySchema) for ``bundle`` on an existing cluster."""
    if options is not None and options.api_key:
        raise ConfigError("a config file would hold the API key in plain text: leave --api-key out and set "
                          "GANRT_API_KEY in the cluster's environment (runtime_env env_vars) instead")
    path, options, ray_options, deployments = _prepare(bundle, options, ray_options)
    return {"proxy_location": "EveryNode",
            "http_options": {"host": options.host, "port": options.port},
            "applications": [{
                "name": options.model_name or path.name, "route_prefix": "/", "import_path": IMPORT_PATH,
                "args": {"bundle": str(path), "options": _changed(options, ("host", "port", "tuning")),
                         "ray": _changed(ray_options, ("address",))},
                # the same settings as args give the code; Ray applies edits here in place (`serve deploy` again)
                "deployments": [{"name": name, **opts} for name, opts in deployments.items()]}]}


def run(bundle, options: ServeOptions, ray_options: RayOptions, *, echo, as_json: bool = False,
        log_level: str = "info") -> None:
    """``ganrt serve BUNDLE --ray``: start (or join) a cluster, deploy, serve until SIGINT/SIGTERM, then remove
    the application (every accepted request answered) and stop the cluster if this command started it."""
    import json
    import logging
    import signal
    import threading

    ray = require_ray()
    from ray import serve

    application = app(bundle, options, ray_options)  # a bad bundle or option: one line, before any cluster starts
    name = options.model_name or Path(bundle).resolve().name
    url = f"http://{options.host}:{options.port}"
    ray.init(address=ray_options.address, logging_level=log_level.upper(), log_to_driver=log_level == "debug")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # replaces Ray's handlers: a signal while deploying ends it cleanly
        signal.signal(sig, lambda *_: stop.set())
    deployed = False
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        try:
            serve.run(application, name=name, route_prefix="/")  # returns once every replica is up and warmed
        except Exception as e:  # noqa: BLE001 - a replica could not start: Ray's status says why, in one line
            raise BackendUnavailable(f"the Ray application {name!r} failed to deploy: "
                                     f"{_deploy_failure(serve, name, e)}") from None
        deployed = True
        info = _wait_ready(url, name, stop)
        if stop.is_set():
            return
        if as_json:
            echo(json.dumps({"url": url, **info}, indent=2))
        b, r = info["batching"], info["ray"]
        count = f"{r['autoscale'][0]}-{r['autoscale'][1]} replicas" if "autoscale" in r else \
            f"{r['replicas']} replica{'s' * (r['replicas'] > 1)}"
        echo(f"ganrt serve --ray: {name} ({info['variant']} on {info['device']}, {count}) at {url}  max batch "
             f"{b['max_batch']}, max delay {b['max_delay_ms']:g} ms ({b['tuning']['source']}), max queue "
             f"{b['max_queue']}", err=True)
        stop.wait()
    finally:
        logging.getLogger("ganrt.serve").info("removing the application (answering what it accepted)")
        try:
            serve.delete(name, _blocking=deployed)  # a failed application's replicas never drain: do not wait
            if ray_options.address is None:  # the cluster this command started
                serve.shutdown()
        finally:
            ray.shutdown()  # on a joined cluster: disconnect


def _deploy_failure(serve, name: str, error: Exception) -> str:
    """The line of a failed deployment's status that names the error (a replica's exception), else Ray's own."""
    import re

    try:
        app = serve.status().applications[name]
        text = "\n".join(d.message for d in app.deployments.values() if d.message) or app.message
    except Exception:  # noqa: BLE001 - no status: Ray's exception is all there is
        text = str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [type(error).__name__]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Unavailable|Exception)\b.*: ", line)]
    return (named or lines)[-1]


def _wait_ready(url: str, name: str, stop, seconds: float = 120.0) -> dict[str, Any]:
    """The model's description once the ingress reports ready."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while not stop.is_set():
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return httpx.get(f"{url}/v1/model", timeout=5).json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"the Ray application {name!r} did not report ready at {url} within "
                                     f"{seconds:.0f} s; see `serve status` and the replica logs")
        time.sleep(0.2)
    return {}
