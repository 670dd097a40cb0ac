"""Deadlines and health, in-process: a request past its deadline (the server's, X-Request-Timeout, or the OIP
timeout parameter) answers 504 and its queued images are never computed; after --unready-after consecutive
failed batches readiness answers 503 while requests are still taken, and a probe makes it ready again once the
backend recovers; a start that fails stops `ganrt serve` with exit status 2."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest


class Gate:
    """Wraps a Generator's generate: blocks until opened, records the seeds' latents it computed, fails on ask."""

    def __init__(self, gen) -> None:
        self.gen, self.real = gen, gen.generate
        self.open = threading.Event()
        self.fail = False
        self.batches: list[int] = []
        gen.generate = self

    def __call__(self, **kw):
        self.open.wait(30)
        self.batches.append(len(kw["z"]))
        if self.fail:
            raise RuntimeError("the device fell off the bus")
        return self.real(**kw)


def _metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(name)


@pytest.mark.parametrize("how", ["header", "oip-parameter", "server-option"])
def test_a_request_past_its_deadline_answers_504_and_is_never_computed(inprocess, how):
    server = inprocess(max_batch=4, max_delay_ms=0, **({"request_timeout_s": 0.3} if how == "server-option" else {}))

    async def go(client):
        gate = Gate(server.service.gen)
        busy = asyncio.ensure_future(client.post("/v1/generate", json={"seeds": [0, 1, 2, 3]}))
        await asyncio.sleep(0.1)  # its batch is computing (held by the gate)
        body = {"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [3], "data": [7, 8, 9]}]}
        headers = {}
        if how == "header":
            headers["X-Request-Timeout"] = "0.3"
        elif how == "oip-parameter":
            body["parameters"] = {"timeout": 300_000}  # microseconds, as Triton's clients send it
        late = await client.post("/v2/models/bundle/infer", json=body, headers=headers)
        gate.open.set()
        first = await busy
        await server.service.batcher.drain()  # the batch that was computing has finished
        metrics = (await client.get("/metrics")).text
        return late, first, gate.batches, metrics

    late, first, batches, metrics = server.run(go)
    assert late.status_code == 504 and "deadline" in late.json()["error"]
    assert batches == [4], "the expired request's images were computed"
    assert _metric(metrics, "ganrt_images_dropped_total", reason="expired") == 3
    if how == "server-option":  # the first request's deadline passed too, while its batch computed
        assert first.status_code == 504 and _metric(metrics, "ganrt_images_wasted_total", reason="expired") == 4
    else:
        assert first.status_code == 200 and _metric(metrics, "ganrt_images_wasted_total", reason="expired") == 0


@pytest.mark.parametrize("header,words", [("soon", "X-Request-Timeout"), ("-1", "X-Request-Timeout"),
                                          ("0", "X-Request-Timeout")])
def test_a_malformed_timeout_is_a_400(inprocess, header, words):
    async def go(client):
        return await client.post("/v1/generate", json={"seeds": [1]}, headers={"X-Request-Timeout": header})

    r = inprocess().run(go)
    assert r.status_code == 400 and words in r.json()["error"]


@pytest.mark.parametrize("timeout", [-5, 1.5, "10", True])
def test_a_malformed_oip_timeout_parameter_is_a_400(inprocess, timeout):
    async def go(client):
        return await client.post("/v2/models/bundle/infer", json={
            "parameters": {"timeout": timeout},
            "inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [1]}]})

    r = inprocess().run(go)
    assert r.status_code == 400 and "timeout" in r.json()["error"]


def test_consecutive_backend_failures_make_it_unready_until_a_probe_succeeds(inprocess):
    server = inprocess(unready_after=2, max_delay_ms=0)

    async def go(client):
        gate = Gate(server.service.gen)
        gate.open.set()
        gate.fail = True
        failures = [(await client.post("/v1/generate", json={"seeds": [i]})).status_code for i in range(2)]
        unready = await client.get("/v2/health/ready")
        still_taken = (await client.post("/v1/generate", json={"seeds": [5]})).status_code
        gate.fail = False  # the backend recovers; no traffic arrives (a load balancer stopped sending it)
        for _ in range(50):
            ready = await client.get("/v2/health/ready")  # the first of these sends a probe
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
        metrics = (await client.get("/metrics")).text
        return failures, unready, still_taken, ready, metrics

    failures, unready, still_taken, ready, metrics = server.run(go)
    assert failures == [500, 500]
    assert unready.status_code == 503 and "last 2 batches failed" in unready.json()["error"]
    assert still_taken == 500  # taken and tried, not refused
    assert ready.status_code == 200 and _metric(metrics, "ganrt_backend_failures") == 0


def test_a_failed_start_stops_ganrt_serve_with_exit_status_2(bundle_dir, monkeypatch):
    from click.testing import CliRunner

    from ganrt.cli import cli
    from ganrt.serve.process import free_port
    from ganrt.serve.service import Service

    def broken_warm(self):
        raise RuntimeError("no memory for batch 64")

    monkeypatch.setattr(Service, "warm", broken_warm)
    result = CliRunner().invoke(cli, ["serve", str(bundle_dir), "--port", str(free_port()), "--threads", "1",
                                      "--log-level", "critical"])
    assert result.exit_code == 2
    assert "the model could not start: RuntimeError: no memory for batch 64" in result.output


def test_the_queue_bound_in_images_answers_503_with_retry_after(inprocess):
    server = inprocess(max_batch=4, max_delay_ms=0, max_queue_images=6)

    async def go(client):
        gate = Gate(server.service.gen)
        busy = asyncio.ensure_future(client.post("/v1/generate", json={"seeds": [0, 1, 2, 3]}))
        await asyncio.sleep(0.1)
        queued = asyncio.ensure_future(client.post("/v1/generate", json={"seeds": list(range(10, 15))}))
        await asyncio.sleep(0.1)
        refused = await client.post("/v1/generate", json={"seeds": [20, 21]})
        gate.open.set()
        return refused, await busy, await queued

    refused, busy, queued = server.run(go)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "5 images waiting, --max-queue-images 6" in refused.json()["error"]
    assert busy.status_code == queued.status_code == 200
    assert np.load(__import__("io").BytesIO(queued.content)).shape[0] == 5
