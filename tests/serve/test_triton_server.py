"""A real Triton Inference Server (2.51, the nvidia-pytriton wheel's tritonserver) started by `ganrt triton`:
it loads the Python-backend repository of `ganrt export-triton --backend python`; tritonclient.http and
tritonclient.grpc get exactly the offline images; a bad request fails alone with its message; the model's config
and Triton's /metrics answer; `ganrt loadtest` checks every answer over both protocols; and SIGTERM or Ctrl-C
leaves no process, shared memory or workspace behind.

The backend Python (ganrt, nvidia-pytriton, numpy < 2) is the `.venv-triton` that `make test` builds beside
`.venv` (or $GANRT_TRITON_PYTHON); without one these tests skip, saying why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

grpc_client = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]: pip install 'ganrt[triton]'")

import tritonclient.http as http_client  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ganrt.cli import cli  # noqa: E402
from ganrt.errors import BackendUnavailable, ConfigError  # noqa: E402
from ganrt.latents import labels_from_seeds, latents_from_seeds  # noqa: E402
from ganrt.serve.triton_server import SHM, TritonProcess, find_python, probe_python, python_models  # noqa: E402


@pytest.fixture(scope="session")
def triton_python():
    """The backend Python `ganrt triton` will find (skip, with the reason, when there is none)."""
    try:
        return find_python()
    except BackendUnavailable as e:
        failed = Path(sys.prefix + "-triton.failed")
        built = f"`make triton-env` failed: {failed.read_text().strip()}; " if failed.is_file() else ""
        pytest.skip(f"no backend Python for Triton's Python backend ({built}{e})")


@pytest.fixture(scope="module")
def repo(bundle_dir, tmp_path_factory, triton_python):
    out = tmp_path_factory.mktemp("triton") / "repo"
    result = CliRunner().invoke(cli, ["export-triton", str(bundle_dir), "--out", str(out), "--backend", "python",
                                      "--device", "cpu", "--max-batch", "16", "--max-queue-delay-us", "2000"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def triton(repo):
    with TritonProcess(repo, timeout=300) as server:
        yield server


def test_the_real_triton_serves_the_exported_repository_and_both_clients_get_the_offline_images(
        triton, repo, offline, oip_inputs):
    http = http_client.InferenceServerClient(triton.url.removeprefix("http://"))
    assert http.is_server_ready() and http.is_model_ready("bundle")
    assert http.get_server_metadata()["version"] == "2.51.0"  # the real server, not ganrt's
    z, labels = latents_from_seeds([70, 71, 72], 16), np.array([[1], [2], [3]], np.int64)
    by_http = http.infer("bundle", oip_inputs(http_client, z=z, labels=labels),
                         outputs=[http_client.InferRequestedOutput("images", binary_data=True)])
    np.testing.assert_array_equal(by_http.as_numpy("images"), offline.generate(z=z, labels=[1, 2, 3]))
    # the repository README's client, as written: tritonclient.grpc with seeds
    code = re.search(r"```python\n(.*?)```", (repo / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code.replace("localhost:8001", triton.grpc), "README.md", "exec"), scope)
    seeds = scope["seeds"].reshape(-1).tolist()
    np.testing.assert_array_equal(scope["images"], offline.generate(seeds=seeds, labels=scope["labels"].reshape(-1)))
    grpc = grpc_client.InferenceServerClient(triton.grpc)
    default_labels = grpc.infer("bundle", oip_inputs(grpc_client, seeds=np.array([[8], [9]], np.int64)))
    np.testing.assert_array_equal(default_labels.as_numpy("images"),
                                  offline.generate(seeds=[8, 9], labels=labels_from_seeds([8, 9], 10)))


def test_a_bad_request_fails_alone_with_its_message(triton, oip_inputs):
    grpc = grpc_client.InferenceServerClient(triton.grpc)
    with pytest.raises(InferenceServerException, match="label 30 is out of range") as e:
        grpc.infer("bundle", oip_inputs(grpc_client, seeds=np.array([[1]], np.int64),
                                        labels=np.array([[30]], np.int64)))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    http = http_client.InferenceServerClient(triton.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="give exactly one of z"):
        http.infer("bundle", oip_inputs(http_client, seeds=np.array([[1]], np.int64), z=np.zeros((1, 16), np.float32)))
    assert http.infer("bundle", oip_inputs(http_client, seeds=np.array([[1]], np.int64))).as_numpy("images").shape == \
        (1, 32, 32, 1)  # the model is still up


def test_the_models_config_and_tritons_metrics_answer(triton, oip_inputs):
    config = httpx.get(f"{triton.url}/v2/models/bundle/config").json()
    assert config["backend"] == "python" and config["max_batch_size"] == 16
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert config["parameters"]["variant"]["string_value"] == "auto"
    grpc_client.InferenceServerClient(triton.grpc).infer("bundle", oip_inputs(grpc_client, seeds=np.array([[3]],
                                                                                                        np.int64)))
    metrics = httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics").text
    success = re.search(r'nv_inference_request_success\{model="bundle",version="1"\} (\d+)', metrics)
    assert success and int(success.group(1)) >= 1, metrics[:2000]


@pytest.mark.parametrize("protocol", ["grpc", "v2"])
def test_loadtest_checks_every_answer_of_the_real_triton(triton, bundle_dir, protocol):
    from ganrt.serve.loadtest import loadtest

    url = triton.grpc if protocol == "grpc" else triton.url
    result = loadtest(url, concurrency=[8], seeds_per_request=4, duration=1.5, protocol=protocol, check=bundle_dir)
    (level,) = result["levels"]
    assert result["model"] == "bundle" and level["errors"] == {} and level["requests"] > 0
    assert result["check"] == {"checked": level["requests"], "differ": 0}
    assert result["server"] == {"variant": None, "batching": {"max_batch": 16}, "triton_config": True}


def _session(pgid: int) -> set[int]:
    """The processes of a process group (tritonserver is its session's leader: its stubs are in it)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(stat.parent.name))
    return members


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_triton_and_leaves_no_process_shared_memory_or_workspace(bundle_dir, triton_python, sig):
    stale = Path(tempfile.mkdtemp(prefix="ganrt-triton-999999999-"))  # what a killed run left: removed at start
    server = TritonProcess(bundle_dir, ["--json", "--max-batch", "8"], timeout=300)
    try:
        info = json.loads(next(line for line in server.output.splitlines() if line.startswith("{")))
        workspace = Path(info["workspace"])
        session = _session(info["pid"])
        shm = sorted(p.name for p in SHM.glob(f"{workspace.name}-*"))
        assert not stale.exists()
        assert workspace.is_dir() and len(session) >= 2 and shm, (session, shm)  # tritonserver, a stub, its region
        assert grpc_client.InferenceServerClient(server.grpc).is_model_ready("bundle")
        server.proc.send_signal(sig)
        assert server.proc.wait(90) == 0, server.output
    finally:
        server.stop()
    assert "stopped (tritonserver exit status 0)" in server.output
    assert _session(info["pid"]) == set() and not [pid for pid in session if _alive(pid)]
    assert not list(SHM.glob(f"{workspace.name}-*")) and not workspace.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)


def test_the_backend_python_is_refused_with_what_it_lacks():
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        pytest.skip("this environment has numpy < 2: nothing to refuse")
    with pytest.raises(BackendUnavailable, match="numpy is 2.*returns empty outputs under numpy 2") as e:
        probe_python(sys.executable)
    assert "make triton-env" in str(e.value)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        probe_python("/nonexistent/bin/python")


def test_a_repository_of_native_models_is_refused_naming_them(bundle_dir, tmp_path):
    from ganrt.bundle import Bundle
    from ganrt.export.triton import TritonOptions, write_repository

    repo = tmp_path / "repo"
    write_repository(Bundle.open(bundle_dir), repo, TritonOptions(device="cpu", variants=("onnxruntime-fp32",)))
    with pytest.raises(ConfigError, match="bundle-onnxruntime-fp32 need Triton backends the nvidia-pytriton wheel"):
        python_models(repo)
    result = CliRunner().invoke(cli, ["triton", str(repo)])
    assert result.exit_code == 2 and "need Triton backends the nvidia-pytriton wheel" in result.output
    assert not list(Path(tempfile.gettempdir()).glob(f"ganrt-triton-{os.getpid()}-*"))  # its workspace: removed
