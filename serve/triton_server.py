"""``ganrt triton BUNDLE_OR_REPO``: a real Triton Inference Server (the ``tritonserver`` of the nvidia-pytriton
wheel) serving ganrt's Python-backend model, started and stopped with nothing left behind.

    ganrt triton bundle/                     # writes the Python-backend repository, then serves it
    ganrt triton repo/ --http-port 8000 --grpc-port 8001 --metrics-port 8002 --host 127.0.0.1

What the wheel's server needs, set up here (the measured recipe; docs/triton.md says why):

- **A backend Python**: the environment Triton's Python-backend stub runs the model in. It must have ganrt,
  nvidia-pytriton (the server, its stubs) and numpy below 2 (under numpy 2 the 2.51 stub returns empty outputs
  and logs no error), so it is not the environment ganrt usually lives in: ``--python``, else
  ``GANRT_TRITON_PYTHON``, else this interpreter if it qualifies, else the ``<venv>-triton`` beside this virtual
  environment (what ``make triton-env`` builds). It is probed in a subprocess and refused with the reason.
- **The stub**: the wheel ships one per Python minor version but the backend looks for it in its backend
  directory, so a workspace (a temporary folder) holds ``backends/python/`` with links to the backend library,
  its utilities and the stub of the backend Python's version.
- **The environment**: the backend Python's ``bin`` first on ``PATH`` (the stub embeds the ``python3`` it finds
  there, with that environment's packages) and its ``LIBDIR`` on ``LD_LIBRARY_PATH`` (the stub links
  ``libpython3.X.so.1.0``; another copy of the same minor version breaks multiprocessing in the model).

Stopping: SIGTERM or Ctrl-C is passed on to tritonserver as SIGTERM (it answers the requests in flight, up to
``--exit-timeout``, and unloads the model; the stubs exit with it). tritonserver runs in its own session, dies
with this process (``PR_SET_PDEATHSIG``), and its shared-memory regions carry a prefix of this run, so after it
exits: any process left in its session is killed, any ``/dev/shm`` region with the prefix removed, and the
workspace deleted. A workspace left by a killed run is removed by the next one.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ganrt.errors import BackendUnavailable, ConfigError, GanrtError
from ganrt.serve.process import ServeProcess, free_port

ENV_PYTHON = "GANRT_TRITON_PYTHON"
WORKSPACE_PREFIX = "ganrt-triton-"
SHM = Path("/dev/shm")
SETUP_HINT = ("make one: python3 -m venv ~/.ganrt-triton && ~/.ganrt-triton/bin/pip install 'ganrt[cpu,triton-server]' "
              f"(in ganrt's checkout: make triton-env), then pass --python ~/.ganrt-triton/bin/python or set "
              f"{ENV_PYTHON}")
# run in the candidate backend Python: what it is and has (json on stdout)
PROBE = r"""
import importlib.util, json, os, sys, sysconfig
out = {"executable": sys.executable, "version": "%d.%d" % sys.version_info[:2],
       "libdir": sysconfig.get_config_var("LIBDIR") or "", "errors": {}}
for name in ("numpy", "ganrt"):
    try:
        out[name] = __import__(name).__version__
    except Exception as e:
        out["errors"][name] = "%s: %s" % (type(e).__name__, e)
try:
    out["model"] = importlib.util.find_spec("ganrt.serve.triton_model") is not None
except Exception:
    out["model"] = False
spec = importlib.util.find_spec("pytriton")
out["server"] = os.path.join(os.path.dirname(spec.origin), "tritonserver") if spec and spec.origin else None
print(json.dumps(out))
"""


@dataclass(frozen=True)
class BackendPython:
    """The Python environment the Python-backend stub runs ganrt in, as probed."""

    executable: Path
    version: str  # "3.11"
    libdir: Path | None  # holds libpython<version>.so.1.0 (None: leave it to the system's library path)
    server: Path  # pytriton/tritonserver: bin/tritonserver, backends/python, python_backend_stubs
    numpy: str
    ganrt: str

    @property
    def bin(self) -> Path:
        return self.executable.parent

    @property
    def stub(self) -> Path:
        return self.server / "python_backend_stubs" / self.version / "triton_python_backend_stub"

    @property
    def tritonserver(self) -> Path:
        return self.server / "bin" / "tritonserver"


def probe_python(executable: str | os.PathLike) -> BackendPython:
    """The backend Python at ``executable``, or BackendUnavailable saying what it lacks."""
    executable = Path(executable)
    if not executable.is_file():
        raise BackendUnavailable(f"backend Python {executable} does not exist; {SETUP_HINT}")
    try:
        done = subprocess.run([str(executable), "-c", PROBE], capture_output=True, text=True, timeout=120)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise BackendUnavailable(f"backend Python {executable} could not be probed") from None
    problems = [f"{name} does not import ({why})" for name, why in found["errors"].items()]
    if found.get("numpy") and int(found["numpy"].split(".")[0]) >= 2:
        problems.append(f"numpy is {found['numpy']}, but the Python backend of Triton 2.51 returns empty outputs "
                        "under numpy 2: install 'numpy<2' there")
    if found.get("ganrt") and not found.get("model"):
        problems.append(f"its ganrt {found['ganrt']} has no ganrt.serve.triton_model: install this ganrt there")
    if not found.get("server"):
        problems.append("nvidia-pytriton (Triton's server) is not installed there")
    if problems:
        raise BackendUnavailable(f"backend Python {executable} cannot run the model: {'; '.join(problems)}. "
                                 f"{SETUP_HINT}")
    # the venv's own bin/python, not what it resolves to: the venv's bin goes first on PATH
    python = BackendPython(executable=executable.absolute(), version=found["version"],
                           libdir=_libpython_dir(found["libdir"], found["version"]), server=Path(found["server"]),
                           numpy=found["numpy"], ganrt=found["ganrt"])
    for path, what in ((python.tritonserver, "the tritonserver binary"),
                       (python.stub, f"a Python-backend stub for Python {python.version}")):
        if not path.is_file():
            raise BackendUnavailable(f"nvidia-pytriton in {executable} has no {what} ({path}); its Python must be "
                                     "one the wheel ships a stub for (3.8 to 3.13)")
    return python


def _libpython_dir(libdir: str, version: str) -> Path | None:
    return Path(libdir) if libdir and (Path(libdir) / f"libpython{version}.so.1.0").is_file() else None


def find_python(explicit: str | os.PathLike | None = None) -> BackendPython:
    """The backend Python: ``explicit``, else $GANRT_TRITON_PYTHON, else this interpreter, else the
    ``<venv>-triton`` beside this virtual environment; BackendUnavailable naming what each one lacks."""
    if explicit or os.environ.get(ENV_PYTHON):
        return probe_python(explicit or os.environ[ENV_PYTHON])
    sibling = Path(sys.prefix + "-triton") / "bin" / "python"
    reasons = []
    for candidate in (Path(sys.executable), sibling):
        if not candidate.is_file():
            reasons.append(f"{candidate}: does not exist")
            continue
        try:
            return probe_python(candidate)
        except BackendUnavailable as e:
            reasons.append(str(e).split(f". {SETUP_HINT}")[0])
    raise BackendUnavailable("no backend Python for Triton's Python backend (" + "; ".join(reasons) + f"). "
                             f"{SETUP_HINT}")


# -- the repository -------------------------------------------------------------------------------------------
def python_models(repo: Path) -> list[str]:
    """The models of a model repository, every one a Python-backend model (ConfigError naming the others: the
    wheel's server has only the Python backend)."""
    from google.protobuf import text_format

    from ganrt.export.triton import model_config_pb2

    pb2 = model_config_pb2()
    names, other = [], []
    for config_file in sorted(repo.glob("*/config.pbtxt")):
        try:
            config = text_format.Parse(config_file.read_text(), pb2.ModelConfig())
        except text_format.ParseError as e:
            raise ConfigError(f"{config_file} does not parse with Triton's ModelConfig: {e}") from None
        name = config.name or config_file.parent.name
        (names if config.backend == "python" else other).append(name)
    if other:
        raise ConfigError(f"{repo}: {', '.join(other)} need Triton backends the nvidia-pytriton wheel does not have "
                          "(it has the Python backend only); serve them with NVIDIA's Triton container, or write "
                          "this repository with `ganrt export-triton --backend python`")
    if not names:
        raise ConfigError(f"{repo} holds no model (no <model>/config.pbtxt): pass a bundle or a model repository")
    return names


# -- the server ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TritonServerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    python: str | None = None  # the backend Python (see find_python)
    exit_timeout_s: int = 30  # how long tritonserver answers in-flight requests after SIGTERM
    ready_timeout_s: float = 600.0  # loading: the model warms every batch bucket
    quiet: bool = False  # keep tritonserver's log to ourselves (its last lines still explain a failure)


@dataclass
class TritonServer:
    """One tritonserver: ``start()`` returns once every model is ready; ``stop()`` leaves nothing behind."""

    repository: Path
    models: list[str]
    python: BackendPython
    workspace: Path
    options: TritonServerOptions
    proc: subprocess.Popen | None = None
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=60))

    @property
    def shm_prefix(self) -> str:
        return f"{self.workspace.name}-"

    @property
    def urls(self) -> dict[str, Any]:
        o = self.options
        return {"http": f"http://{o.host}:{o.http_port}", "grpc": f"{o.host}:{o.grpc_port}",
                "metrics": f"http://{o.host}:{o.metrics_port}/metrics"}

    def argv(self) -> list[str]:
        o = self.options
        argv = [str(self.python.tritonserver), "--model-repository", str(self.repository),
                "--backend-directory", str(self.workspace / "backends"),
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                "--http-port", str(o.http_port), "--grpc-port", str(o.grpc_port), "--metrics-port", str(o.metrics_port),
                "--http-address", o.host, "--grpc-address", o.host, "--metrics-address", o.host,
                "--exit-timeout-secs", str(o.exit_timeout_s), "--pinned-memory-pool-byte-size=0"]
        if not Path("/dev/nvidiactl").exists():  # no NVIDIA driver: no NVML/DCGM errors at every start
            argv.append("--allow-gpu-metrics=false")
        return argv

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.python.bin), env.get("PATH", "")])
        if self.python.libdir is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.python.libdir),
                                                                 env.get("LD_LIBRARY_PATH", "")) if p)
        return env

    def start(self, stopping: threading.Event) -> None:
        """Link the stub into the workspace, start tritonserver, wait until every model is ready (or
        ``stopping`` is set: return early)."""
        if stopping.is_set():  # a signal while the repository was written: start nothing
            return
        backend = self.workspace / "backends" / "python"
        backend.mkdir(parents=True, exist_ok=True)
        shipped = self.python.server / "backends" / "python"
        for source in (shipped / "libtriton_python.so", shipped / "triton_python_backend_utils.py", self.python.stub):
            (backend / source.name).symlink_to(source)
        self.proc = subprocess.Popen(self.argv(), env=self.environment(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
                                     preexec_fn=_die_with_parent)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + self.options.ready_timeout_s
        waiting = list(self.models)
        while waiting and not stopping.is_set():
            if self.proc.poll() is not None:
                raise GanrtError(f"tritonserver exited with status {self.proc.returncode} before its models were "
                                 f"ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise GanrtError(f"the models were not ready after {self.options.ready_timeout_s:g} s:\n{self.tail()}")
            waiting = [m for m in waiting if not _ready(f"{self.urls['http']}/v2/models/{m}/ready")]
            stopping.wait(0.25)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
            if not self.options.quiet:
                sys.stderr.write(line)
                sys.stderr.flush()

    def tail(self) -> str:
        return "".join(self.log).rstrip()

    def stop(self) -> int | None:
        """SIGTERM (tritonserver answers what is in flight, then unloads), a kill after the exit timeout; then
        whatever is left of its session, its shared memory and the workspace. tritonserver's exit status."""
        status = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(self.options.exit_timeout_s + 30)
            except subprocess.TimeoutExpired:
                _kill_session(self.proc.pid)
                status = self.proc.wait()
            _end_session(self.proc.pid)
        for region in SHM.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        shutil.rmtree(self.workspace, ignore_errors=True)
        return status


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _die_with_parent() -> None:  # in the child, before exec: SIGTERM when this process dies, even by SIGKILL
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kill_session(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _end_session(pgid: int, wait: float = 15.0) -> None:
    """Wait for what is left of tritonserver's process group (stubs finishing), then kill the rest."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    _kill_session(pgid)


def remove_stale_workspaces(root: Path) -> None:
    """Workspaces of runs that were killed (their pid is gone): a run that can clean up removes its own."""
    for path in root.glob(f"{WORKSPACE_PREFIX}*"):
        pid = path.name[len(WORKSPACE_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
            for region in SHM.glob(f"{path.name}-*"):
                region.unlink(missing_ok=True)


def prepare(source: Path, options: TritonServerOptions, repository_options, workspace: Path,
            progress=lambda s: None) -> TritonServer:
    """A TritonServer for ``source``: a bundle (its Python-backend repository written into the workspace) or a
    repository of Python-backend models (served in place)."""
    from ganrt.bundle import MANIFEST, Bundle
    from ganrt.export.triton import write_repository

    if (source / MANIFEST).is_file():
        python = find_python(options.python)
        repo = workspace / "repository"
        progress(f"writing the Python-backend repository of {source}")
        write_repository(Bundle.open(source), repo, repository_options, progress=progress)
        models = python_models(repo)
    else:
        if repository_options.variants or repository_options.model_name:
            raise ConfigError("--variants and --model-name shape the repository written from a bundle; "
                              f"{source} is a repository already")
        repo = source.resolve()
        models = python_models(repo)
        python = find_python(options.python)
    return TritonServer(repository=repo, models=models, python=python, workspace=workspace, options=options)


def run(source: Path, options: TritonServerOptions, repository_options, *, echo=click.echo,
        as_json: bool = False) -> int:
    """Serve ``source`` until SIGTERM or Ctrl-C; the process's exit status."""
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    root = Path(tempfile.gettempdir())
    remove_stale_workspaces(root)
    workspace = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-", dir=root))
    server = None
    try:
        server = prepare(source, options, repository_options, workspace,
                         progress=lambda s: echo(f"ganrt triton: {s}", err=True))
        server.start(stopping)
        if server.proc is not None and not stopping.is_set():
            info = {**server.urls, "models": server.models, "repository": str(server.repository),
                    "workspace": str(workspace), "pid": server.proc.pid, "python": str(server.python.executable),
                    "numpy": server.python.numpy, "ganrt": server.python.ganrt}
            if as_json:
                echo(json.dumps(info), err=False)
            echo(f"ganrt triton: {', '.join(server.models)} ready: HTTP {info['http']}, gRPC {info['grpc']}, metrics "
                 f"{info['metrics']} (tritonserver pid {info['pid']}; Ctrl-C or SIGTERM stops it)", err=True)
        while not stopping.is_set() and server.proc.poll() is None:
            stopping.wait(0.5)
        if not stopping.is_set():  # tritonserver exited on its own
            raise GanrtError(f"tritonserver exited with status {server.proc.returncode}:\n{server.tail()}")
    finally:
        status = server.stop() if server is not None else None
        shutil.rmtree(workspace, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    echo(f"ganrt triton: stopped (tritonserver exit status {status})", err=True)
    return 0 if status in (0, None) else 1


class TritonProcess(ServeProcess):
    """``ganrt triton SOURCE --quiet`` as a child process on free ports of 127.0.0.1, for tools/ and the tests:
    returns once every model is ready and ``ganrt triton`` said so (its ``--json`` line printed before);
    ``grpc`` is its gRPC address."""

    command, port_option, default_args = "triton", "--http-port", ("--quiet",)

    def __init__(self, source, args=(), **kwargs) -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        super().__init__(source, ["--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
                                  *args], **kwargs)
        deadline = time.monotonic() + 30
        while " ready: HTTP " not in self.output:  # Triton is ready a poll before ganrt triton says so
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ganrt triton did not say it was ready:\n{self.output}")
            time.sleep(0.05)


# -- the command ----------------------------------------------------------------------------------------------
@click.command("triton", context_settings={"help_option_names": ["-h", "--help"], "show_default": True,
                                           "max_content_width": 100})
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", help="Address of all three services (0.0.0.0 for every interface).")
@click.option("--http-port", default=8000, type=click.IntRange(1, 65535), help="OIP v2 over HTTP.")
@click.option("--grpc-port", default=8001, type=click.IntRange(1, 65535), help="OIP v2 over gRPC.")
@click.option("--metrics-port", default=8002, type=click.IntRange(1, 65535), help="Triton's Prometheus /metrics.")
@click.option("--python", "python", default=None, type=click.Path(dir_okay=False),
              help=f"The backend Python: ganrt, nvidia-pytriton and numpy<2 installed (default: ${ENV_PYTHON}, this "
                   "Python if it has them, or the <venv>-triton beside this virtual environment).")
@click.option("--variants", default=None,
              help="A bundle's models: one per variant named (comma-separated), instead of one running auto.")
@click.option("--model-name", default=None, help="A bundle's model name, or prefix (default: the bundle's name).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              help="A bundle's model instances (auto: a GPU when this machine has one).")
@click.option("--instances", type=click.IntRange(1, 64), default=1, help="A bundle's model instances (per GPU).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="A bundle's max_batch_size (default: the bundle's).")
@click.option("--max-queue-delay-us", type=click.IntRange(0, 10_000_000), default=None,
              help="A bundle's dynamic batching delay (default: from its tuning record for this machine, else 5000).")
@click.option("--exit-timeout", default=30, type=click.IntRange(0, 3600),
              help="On SIGTERM/Ctrl-C: seconds Triton answers the requests in flight before it exits.")
@click.option("--timeout", "ready_timeout", default=600.0, type=click.FloatRange(min=1),
              help="Seconds the models may take to load and warm up.")
@click.option("--quiet", is_flag=True, help="Do not pass Triton's log on (its last lines still explain a failure).")
@click.option("--json", "as_json", is_flag=True, help="Print the addresses, pid and workspace as JSON once ready.")
def triton(source: Path, host, http_port, grpc_port, metrics_port, python, variants, model_name, device, instances,
           max_batch, max_queue_delay_us, exit_timeout, ready_timeout, quiet, as_json) -> None:
    """Serve SOURCE (a bundle, or a repository of `ganrt export-triton --backend python`) with a real Triton
    Inference Server: the tritonserver of the nvidia-pytriton wheel, running ganrt's runtime in its Python backend.

    \b
    ganrt triton bundle/                                 # HTTP :8000, gRPC :8001, metrics :8002
    ganrt loadtest localhost:8001 --protocol grpc --check bundle/

    The backend Python needs ganrt, nvidia-pytriton and numpy<2 (`make triton-env` builds .venv-triton). Ctrl-C
    or SIGTERM stops the server: requests in flight are answered, then no process, shared memory or workspace
    is left.
    """
    from ganrt.export.triton import TritonOptions

    names = tuple(v.strip() for v in variants.split(",") if v.strip()) if variants is not None else None
    if names is not None and not names:
        raise ConfigError("--variants takes comma-separated variant names, e.g. onnxruntime-fp32,openvino-int8")
    if len({http_port, grpc_port, metrics_port}) < 3:
        raise ConfigError("--http-port, --grpc-port and --metrics-port must differ")
    if device == "auto":
        from ganrt.runtime.machine import Availability

        device = "gpu" if Availability.probe().cuda else "cpu"
    options = TritonServerOptions(host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                  python=python, exit_timeout_s=exit_timeout, ready_timeout_s=ready_timeout,
                                  quiet=quiet)
    repository = TritonOptions(backend="python", variants=names, model_name=model_name, device=device,
                               instances=instances, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us)
    sys.exit(run(source, options, repository, echo=click.echo, as_json=as_json))
