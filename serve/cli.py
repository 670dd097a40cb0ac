"""Commands: ``ganrt serve BUNDLE`` (an HTTP server, or a Ray Serve deployment with ``--ray``), ``ganrt serve-config
BUNDLE --ray`` (a config for ``serve deploy``) and ``ganrt loadtest URL`` (closed-loop load)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ganrt.errors import BackendUnavailable, ConfigError
from ganrt.precisions import NAMES as PRECISIONS
from ganrt.runtime.backends import NAMES as BACKEND_NAMES


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must be comma-separated integers >= 1, e.g. 1,8,64; got {text!r}")
    return values


def _ray_options(ray: bool, replicas: int | None, autoscale: str | None, num_cpus: float | None,
                 num_gpus: float | None, address: str | None):
    """RayOptions from the --ray group of options, or None without --ray (ConfigError for a stray one)."""
    given = {"--replicas": replicas, "--autoscale": autoscale, "--num-cpus": num_cpus, "--num-gpus": num_gpus,
             "--address": address}
    if not ray:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise ConfigError(f"{', '.join(stray)} go{'es' * (len(stray) == 1)} with --ray (a Ray Serve deployment)")
        return None
    from ganrt.serve.ray import RayOptions, parse_autoscale

    if replicas is not None and autoscale is not None:
        raise ConfigError("give --replicas N or --autoscale MIN:MAX, not both")
    return RayOptions(replicas=replicas or 1, autoscale=parse_autoscale(autoscale) if autoscale else None,
                      num_cpus=1.0 if num_cpus is None else num_cpus, num_gpus=num_gpus or 0.0, address=address)


def serve_options(command):
    """The options of a server (``ganrt serve`` and ``ganrt serve-config``), applied to ``command``."""
    options = [
        click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
        click.option("--port", default=8000, type=click.IntRange(1, 65535), help="Port to listen on."),
        click.option("--backend", default="auto", type=click.Choice(["auto", *BACKEND_NAMES]),
                     help="Backend; 'auto' = the fastest here whose variant passed parity."),
        click.option("--variant", default=None, help="One variant by name, e.g. openvino-int8 (overrides --backend)."),
        click.option("--precision", default=None, type=click.Choice(PRECISIONS),
                     help="Precision (default: the best)."),
        click.option("--model-name", default=None,
                     help="Name in the OIP routes (default: the bundle directory's name)."),
        click.option("--max-batch", default=None, type=click.IntRange(min=1),
                     help="Images per formed batch (default: where throughput stops growing in the bundle's "
                          "tuning record for this machine, from `ganrt bench`, else 64; capped at the bundle's max "
                          "batch)."),
        click.option("--max-delay-ms", default=None, type=click.FloatRange(0, 10_000),
                     help="Longest a request waits for others to fill its batch (default: half the batch's "
                          "measured time, else 5 ms)."),
        click.option("--max-queue", default=256, type=click.IntRange(min=1),
                     help="Requests waiting for a batch; more are answered 503 with Retry-After at once."),
        click.option("--max-queue-images", default=None, type=click.IntRange(min=1),
                     help="Images waiting for a batch; more are answered 503 at once (default: 16 full batches, "
                          "or one largest request)."),
        click.option("--request-timeout-s", default=30.0, type=click.FloatRange(0, 86_400, min_open=True),
                     help="A request's deadline (clients may ask for less: X-Request-Timeout, or the OIP "
                          "'timeout' parameter in microseconds); past it: 504, its queued work dropped."),
        click.option("--unready-after", default=3, type=click.IntRange(min=1),
                     help="Consecutive failed batches after which /v2/health/ready answers 503 (until one "
                          "succeeds; the readiness route probes)."),
        click.option("--api-key", default=None, envvar="GANRT_API_KEY", show_envvar=True,
                     help="Require this key ('Authorization: Bearer KEY' or 'X-API-Key: KEY') on every route but "
                          "the --public ones. At least 16 characters."),
        click.option("--public", default="health,page", show_default=True,
                     help="Route groups open without the API key: health (/v2/health/*), page (the explorer's "
                          "files), metrics (/metrics); comma-separated, or 'none'."),
        click.option("--log-format", default="text", type=click.Choice(["text", "json"]),
                     help="Log lines (access lines included) as text or as one JSON object each."),
        click.option("--no-access-log", is_flag=True, help="No access line per request (info level)."),
        click.option("--threads", default=None, type=click.IntRange(min=1),
                     help="Backend CPU threads (default: cores; with --ray: --num-cpus)."),
        click.option("--max-seeds-per-request", default=1024, type=click.IntRange(min=1),
                     help="Images one request may ask for (larger: 400)."),
        click.option("--max-body-mb", default=16.0, type=click.FloatRange(min=0.001),
                     help="Largest request body (MiB)."),
        click.option("--no-warmup", is_flag=True,
                     help="Report ready before compiling the batch shapes (not for production)."),
        click.option("--ray", "ray", is_flag=True,
                     help="Deploy on a Ray cluster with Ray Serve (the same routes; pip install 'ganrt[ray]')."),
        click.option("--replicas", default=None, type=click.IntRange(min=1),
                     help="With --ray: model replicas (default 1)."),
        click.option("--autoscale", default=None, metavar="MIN:MAX",
                     help="With --ray: Ray's autoscaler keeps between MIN and MAX replicas (not with --replicas)."),
        click.option("--num-cpus", default=None, type=click.FloatRange(min=0),
                     help="With --ray: CPUs each model replica reserves (default 1)."),
        click.option("--num-gpus", default=None, type=click.FloatRange(min=0),
                     help="With --ray: GPUs each model replica reserves (default 0; fractions share a GPU)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _serve_options(max_body_mb: float, no_warmup: bool, public: str, no_access_log: bool, **fields):
    from ganrt.serve.options import ServeOptions, check

    groups = () if public.strip().lower() == "none" else tuple(g.strip() for g in public.split(",") if g.strip())
    options = ServeOptions(**fields, max_body_bytes=int(max_body_mb * 2**20), warmup=not no_warmup, public=groups,
                           access_log=not no_access_log)
    check(options)
    return options


SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}


@click.command("serve", context_settings=SETTINGS)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@serve_options
@click.option("--address", default=None,
              help="With --ray: join this running cluster (auto, or the head's HOST:6379) instead of starting one.")
@click.option("--grpc-port", default=None, type=click.IntRange(1, 65535),
              help="Also serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService) on this port, "
                   "on the same batcher (pip install 'ganrt[triton]').")
@click.option("--ssl-certfile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (PEM; with --ssl-keyfile).")
@click.option("--ssl-keyfile", default=None, type=click.Path(exists=True, dir_okay=False),
              help="The certificate's private key (PEM).")
@click.option("--log-level", default="info", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved configuration as JSON on stdout first.")
def serve(bundle: Path, ray: bool, replicas: int | None, autoscale: str | None, num_cpus: float | None,
          num_gpus: float | None, address: str | None, grpc_port: int | None, ssl_certfile: str | None,
          ssl_keyfile: str | None, log_level: str, as_json: bool, **kwargs) -> None:
    """Serve BUNDLE over HTTP: Open Inference Protocol v2, /v1/generate, /metrics and a seed explorer at /.

    One Generator behind a dynamic batcher: concurrent requests are merged into batches of up to
    --max-batch images. /v2/health/ready answers 200 once every batch shape is compiled. SIGTERM (or
    Ctrl-C) stops accepting, answers every accepted request, then exits.

    With --ray, the same routes are served by Ray Serve: one ingress and --replicas model replicas (or
    --autoscale MIN:MAX) on a local cluster it starts, or on the cluster at --address; Ctrl-C removes the
    application (and stops the cluster it started).
    """
    from ganrt.serve.edges import configure_logging

    options = _serve_options(**kwargs)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ConfigError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    ray_options = _ray_options(ray, replicas, autoscale, num_cpus, num_gpus, address)
    if grpc_port is not None and (ray_options is not None or grpc_port == options.port):
        raise ConfigError("--grpc-port is a port of its own beside --port, for ganrt serve without --ray")
    if ray_options is not None:
        from ganrt.serve.ray import run

        if ssl_certfile:
            raise ConfigError("with --ray, Ray Serve's proxy takes the connections: terminate TLS in front of it "
                              "(a load balancer or reverse proxy), not with --ssl-certfile")
        configure_logging(log_level, options.log_format)
        run(bundle, options, ray_options, echo=click.echo, as_json=as_json, log_level=log_level)
        return
    import uvicorn

    from ganrt.serve.app import create_app
    from ganrt.serve.service import Service

    host, port = options.host, options.port
    scheme = "https" if ssl_certfile else "http"
    service = Service(bundle, options)
    service.load()  # a bad bundle or option: one line, exit 2, before any port is bound
    o = service.options
    config = uvicorn.Config(None, host=host, port=port, log_level=log_level, log_config=None, loop="auto",
                            http="auto", timeout_graceful_shutdown=60, access_log=False, ssl_certfile=ssl_certfile,
                            ssl_keyfile=ssl_keyfile)
    server = uvicorn.Server(config)

    def stop_on_failure() -> None:  # the model could not start (warm-up failed): stop serving, exit non-zero
        server.should_exit = True

    app = create_app(service, on_start_failure=stop_on_failure)
    grpc = ""
    if grpc_port is not None:
        from ganrt.serve.grpc_service import attach

        attach(app, service, host=host, port=grpc_port)
        grpc = f", gRPC at {host}:{grpc_port}"
    info = {"url": f"{scheme}://{host}:{port}", **({"grpc": f"{host}:{grpc_port}"} if grpc else {}),
            **service.describe()}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    key = "API key required" if (o.api_key or os.environ.get("GANRT_API_KEY")) else "no API key"
    click.echo(f"ganrt serve: {o.model_name} ({service.gen.variant} on {service.gen.device}) at {scheme}://{host}:"
               f"{port}{grpc}  max batch {o.max_batch}, max delay {o.max_delay_ms:g} ms ({o.tuning['source']}), "
               f"max queue {o.max_queue} requests / {o.max_queue_images} images, timeout {o.request_timeout_s:g} s, "
               f"{key}", err=True)
    configure_logging(log_level, o.log_format)
    config.app = app
    server.run()
    if service.failure:
        raise BackendUnavailable(f"the model could not start: {service.failure}")


@click.command("serve-config", context_settings=SETTINGS)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@serve_options
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the config here (default: print it).")
def serve_config(bundle: Path, ray: bool, replicas: int | None, autoscale: str | None, num_cpus: float | None,
                 num_gpus: float | None, out: Path | None, **kwargs) -> None:
    """Write the config file that deploys BUNDLE on a running Ray cluster: `serve deploy FILE`.

    \b
    ganrt serve-config bundle --ray --host 0.0.0.0 --autoscale 1:4 --num-gpus 1 -o serve.yaml
    serve deploy serve.yaml         # on the cluster (ray start --head); `serve status` follows it

    The bundle's absolute path goes into the file: it must be readable there on every node. Edit the
    `deployments` section (replicas, resources) and run `serve deploy` again to change them in place.
    """
    from ganrt.fileio import atomic_write_text
    from ganrt.serve.ray import INSTALL_HINT
    from ganrt.serve.ray import serve_config as config

    try:
        import yaml
    except ImportError:
        raise BackendUnavailable(f"serve-config writes YAML with PyYAML, which is not installed: {INSTALL_HINT}") \
            from None

    if not ray:
        raise ConfigError("serve-config writes a Ray Serve config: pass --ray")
    if click.get_current_context().get_parameter_source("api_key") == click.core.ParameterSource.ENVIRONMENT:
        kwargs["api_key"] = None  # the ingress reads GANRT_API_KEY from its own environment on the cluster
    ray_options = _ray_options(ray, replicas, autoscale, num_cpus, num_gpus, None)
    text = "# ganrt serve-config: deploy with `serve deploy THIS_FILE` on a running Ray cluster\n" + \
        yaml.safe_dump(config(bundle, _serve_options(**kwargs), ray_options), sort_keys=False)
    if out is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        click.echo(f"wrote {out}; deploy it with: serve deploy {out}", err=True)


@click.command("loadtest", context_settings=SETTINGS)
@click.argument("url")
@click.option("--concurrency", default="1,8,64", help="Concurrent clients, one level each (comma-separated).")
@click.option("--seeds-per-request", default=16, type=click.IntRange(min=1), help="Images per request.")
@click.option("--duration", default=10.0, type=click.FloatRange(min=0.1), help="Seconds per level.")
@click.option("--protocol", default="v1", type=click.Choice(["v1", "v2", "grpc"]),
              help="v1: /v1/generate with seeds; v2: OIP infer over HTTP with latents (ganrt serve, Ray, Triton); "
                   "grpc: the same over gRPC, URL host:port (ganrt serve --grpc-port, Triton).")
@click.option("--model", default=None,
              help="Model name for v2/grpc (default: what a ganrt server reports, else the bundle's name).")
@click.option("--check", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="BUNDLE: compare every answer with offline generation of the same seeds, and measure the "
                   "same variant offline at the server's max batch (served/offline ratio).")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="BUNDLE: the generator's inputs for a server that does not describe them (Triton), without "
                   "comparing pixels.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write results.json, report.md and loadtest.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def loadtest(url: str, concurrency: str, seeds_per_request: int, duration: float, protocol: str,
             model: str | None, check: Path | None, bundle: Path | None, out: Path | None, as_json: bool) -> None:
    """Load URL (a ganrt server, its Ray deployment or Triton) at each concurrency level; report img/s, p50/p99
    latency, errors by kind and the batch sizes the server formed. Exit status 1 when any answer failed or
    differed from offline generation."""
    from ganrt.serve.loadtest import loadtest as run
    from ganrt.serve.loadtest import write_report

    levels = _ints(concurrency, "--concurrency")
    results = run(url, concurrency=levels, seeds_per_request=seeds_per_request, duration=duration,
                  protocol=protocol, model=model, check=check, bundle=bundle,
                  progress=lambda s: click.echo(f"loadtest: {s}", err=True) if not as_json else None)
    if out is not None:
        write_report(out, results)
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    else:
        click.echo(f"{'clients':>8} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
                   + ("  served/offline" if results.get("offline") else ""))
        for r in results["levels"]:
            ratio = f"  {r['served_vs_offline']:.2f}" if "served_vs_offline" in r else ""
            click.echo(f"{r['concurrency']:>8} {r['images_per_s']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                       f"{sum(r['errors'].values()):>7}{ratio}")
        if results.get("check"):
            click.echo(f"checked {results['check']['checked']} answers: {results['check']['differ']} differ from "
                       "offline generation")
        if out is not None:
            click.echo(f"report: {out / 'report.md'}")
    failed = any(r["errors"] for r in results["levels"]) or bool((results.get("check") or {}).get("differ"))
    sys.exit(1 if failed else 0)
