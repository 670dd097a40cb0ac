"""`ganrt serve BUNDLE --ray` on a real local Ray cluster (``ray.init(num_cpus=2)``, joined with --address), two
model replicas batching up to 16 images for up to 1 s: the images are exactly the offline ones under concurrent
load with 0 errors, a replica merges more requests than Ray's default limit of 5 would allow, the routes and
errors are those of `ganrt serve`, a killed replica is replaced while requests keep succeeding (the parts it held
sent again), and SIGTERM removes the application.

Ray's ``_local_testing_mode`` does not run ``@serve.batch``, hence a real cluster. It is kept small for a 2-core
machine: a tiny bundle, one ingress (no CPU reserved) and two replicas of one CPU each, short loads."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from ganrt.latents import labels_from_seeds
from ganrt.serve.process import free_port, stop

ray = pytest.importorskip("ray", reason="Ray Serve is the optional `ray` extra: pip install 'ganrt[ray]'")
pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow
APP = "bundle"
MODEL_REPLICA = f"SERVE_REPLICA::{APP}#Model#"
DELAY_MS = 1000  # a batch short of 16 images waits this long for company: long enough to catch one waiting


@pytest.fixture(scope="module")
def cluster(bundle_dir):
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ganrt", "serve", str(bundle_dir), "--ray", "--replicas", "2",
                             "--num-cpus", "1", "--address", ray.get_runtime_context().gcs_address, "--port", str(port),
                             "--max-batch", "16", "--max-delay-ms", str(DELAY_MS), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ganrt serve --ray:"):
                ready.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(240):
            raise RuntimeError("ganrt serve --ray did not come up in 240 s:\n" + "".join(lines))
        yield {"url": f"http://127.0.0.1:{port}", "proc": proc, "lines": lines}
    finally:
        stop(proc)
        ray.shutdown()


@pytest.fixture(scope="module")
def offline(bundle_dir):
    from ganrt.runtime import load

    gen = load(bundle_dir)
    yield gen
    gen.close()


def _digest(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()


def test_concurrent_load_gets_the_offline_images_with_no_errors(cluster, bundle_dir):
    from ganrt.serve.loadtest import loadtest

    v1 = loadtest(cluster["url"], concurrency=[32], seeds_per_request=1, duration=3.0, protocol="v1",
                  check=bundle_dir)
    (level,) = v1["levels"]
    assert level["errors"] == {} and level["requests"] >= 32
    assert v1["check"]["checked"] == level["requests"] and v1["check"]["differ"] == 0
    assert v1["server"]["ray"] == {"replicas": 2, "num_cpus": 1.0, "num_gpus": 0.0, "parts_resent": 0}
    assert level["batch_images"]["+Inf"] > 0  # the batches the replicas formed, counted by the ingress
    v2 = loadtest(cluster["url"], concurrency=[8], seeds_per_request=3, duration=1.5, protocol="v2", check=bundle_dir)
    assert v2["levels"][0]["errors"] == {} and v2["check"]["differ"] == 0 and v2["check"]["checked"] > 0


def test_a_replica_merges_more_one_image_requests_than_rays_default_cap_of_five(cluster, offline):
    """64 one-image calls straight to the model deployment (no HTTP in between to pace them): each replica
    merges up to --max-batch 16 of them, which Ray's default max_ongoing_requests of 5 per replica would never
    let form."""
    from ray import serve

    from ganrt.serve.batcher import Work

    handle = serve.get_deployment_handle("Model", app_name=APP)
    seeds = list(range(5000, 5064))
    labels = labels_from_seeds(seeds, 10)
    calls = [handle.generate.remote(Work(seeds=np.array([s], np.uint64), labels=labels[i:i + 1]))
             for i, s in enumerate(seeds)]
    done = [c.result(timeout_s=120) for c in calls]
    np.testing.assert_array_equal(np.concatenate([images for images, _ in done]),
                                  offline.generate(seeds=seeds, labels=labels))
    batches = [stats["batch_images"] for _, parts in done for stats in parts if "batch_images" in stats]
    assert sum(batches) == 64 and max(batches) <= 16
    assert max(batches) > 5, batches


def test_routes_and_errors_are_those_of_ganrt_serve(cluster, offline):
    url = cluster["url"]
    meta = httpx.get(f"{url}/v2/models/{APP}").json()
    assert [i["name"] for i in meta["inputs"]] == ["z", "labels", "seeds"]
    assert meta["platform"] == f"ganrt_{offline.backend}"
    r = httpx.post(f"{url}/v1/generate", json={"seeds": [5, 40], "labels": [1, 2]})  # 2 images: one batch part
    assert r.status_code == 200 and r.headers["x-ganrt-variant"] == offline.variant
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), offline.generate(seeds=[5, 40], labels=[1, 2]))
    seeds = list(range(100, 140))  # 40 images: three parts of at most 16, over both replicas
    big = httpx.post(f"{url}/v1/generate", json={"seeds": seeds}, timeout=60)
    np.testing.assert_array_equal(np.load(io.BytesIO(big.content)),
                                  offline.generate(seeds=seeds, labels=labels_from_seeds(seeds, 10)))
    bad = httpx.post(f"{url}/v1/generate", json={"seeds": [1], "labels": 10})
    assert bad.status_code == 400 and "label 10 is out of range" in bad.json()["error"]
    assert httpx.get(f"{url}/v2/models/other").status_code == 404
    # the ingress builds its answers as ganrt serve does: an id full of '{"data": null}' is refused, not
    # multiplied into copies of the images; a request past its deadline answers 504
    seeds_input = {"name": "seeds", "datatype": "INT64", "shape": [1], "data": [1]}
    evil = httpx.post(f"{url}/v2/models/{APP}/infer", json={"id": '{"data": null}' * 100, "inputs": [seeds_input]})
    assert evil.status_code == 400 and "256" in evil.json()["error"]
    short = httpx.post(f"{url}/v2/models/{APP}/infer", json={"id": '"data": null', "inputs": [seeds_input]})
    assert short.status_code == 200 and len(short.content) < 32 * 32 * 4 + 500
    late = httpx.post(f"{url}/v1/generate", json={"seeds": list(range(1000, 1600))}, timeout=60,
                      headers={"X-Request-Timeout": "0.001"})
    assert late.status_code == 504
    metrics = httpx.get(f"{url}/metrics").text
    assert 'ganrt_requests_total{protocol="v1"}' in metrics and 'ganrt_errors_total{status="400"}' in metrics


def _model_replicas() -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(MODEL_REPLICA))


def test_a_killed_replica_is_replaced_while_requests_keep_succeeding(cluster, offline):
    from ray import serve

    url = cluster["url"]
    before = _model_replicas()
    assert len(before) == 2
    answers: list[tuple[float, int, int, str]] = []  # (done at, status, first seed, digest)
    stop = threading.Event()

    # 6 clients of 2 images: 12 images, short of a batch of 16 whichever replicas they reach, so requests wait in
    # a replica's batch queue for company (up to DELAY_MS). The replica killed is one seen holding some (Ray's
    # own count, asked of the replica actor) and still holding them a moment later: by then Ray's router has the
    # replica's acceptance and handed the call to the ingress (a request killed before that, Ray routes again by
    # itself), so the ingress must send what the replica held again
    def client(k: int):
        with httpx.Client(timeout=120) as http:
            seed = 100_000 * (k + 1)
            while not stop.is_set():
                r = http.post(f"{url}/v1/generate", json={"seeds": [seed, seed + 1]})
                digest = _digest(np.load(io.BytesIO(r.content))) if r.status_code == 200 else r.text
                answers.append((time.monotonic(), r.status_code, seed, digest))
                seed += 2

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        def holding(actor) -> bool:
            return ray.get(actor.get_num_ongoing_requests.remote(), timeout=10) > 0

        victim, deadline = None, time.monotonic() + 60
        while victim is None:
            for actor in (ray.get_actor(name, namespace="serve") for name in before):
                if holding(actor):
                    time.sleep(DELAY_MS / 1e3 * 0.2)
                    if holding(actor):
                        victim = actor
                        break
            assert time.monotonic() < deadline, "no replica held a request for 60 s"
            time.sleep(0.01)
        ray.kill(victim, no_restart=True)
        killed_at = time.monotonic()
        deadline = killed_at + 180
        while True:
            now = _model_replicas()
            states = serve.status().applications[APP].deployments["Model"].replica_states
            if not set(before) <= set(now) and len(now) == 2 and states.get("RUNNING") == 2:
                replaced_at = time.monotonic()
                break
            assert time.monotonic() < deadline, f"no replacement after 180 s: {now}, {states}"
            time.sleep(0.2)
        time.sleep(1.5)  # and requests keep succeeding with the new replica in service
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert [a for a in answers if a[1] != 200] == []
    assert sum(1 for a in answers if a[0] > replaced_at) > 0
    assert sum(1 for a in answers if killed_at < a[0] < replaced_at) > 0
    resent = httpx.get(f"{url}/v1/model").json()["ray"]["parts_resent"]
    assert resent > 0, "the killed replica had nothing in flight: the test did not exercise the resend"
    for _, _, seed, digest in answers:
        seeds = [seed, seed + 1]
        assert digest == _digest(offline.generate(seeds=seeds, labels=labels_from_seeds(seeds, 10)))


def test_sigterm_removes_the_application_and_the_command_exits(cluster):
    from ray import serve

    proc = cluster["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0, "".join(cluster["lines"])
    assert APP not in serve.status().applications
    assert _model_replicas() == []
