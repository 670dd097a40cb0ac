"""A real `ganrt serve` (uvicorn) on 127.0.0.1: 64 concurrent clients get exact images with 0 errors, overload
answers only 200 or 503 and leaves the server up, SIGTERM answers every accepted request, and a Triton client
works against it."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import numpy as np

from ganrt.latents import labels_from_seeds, latents_from_seeds


def test_64_concurrent_clients_get_exact_images_and_no_errors(server, bundle_dir):
    from ganrt.serve.loadtest import loadtest

    s = server("--max-batch", "16", "--max-delay-ms", "2")
    results = loadtest(s.url, concurrency=[64], seeds_per_request=4, duration=2.0, protocol="v1", check=bundle_dir)
    (level,) = results["levels"]
    assert level["errors"] == {} and level["requests"] >= 64
    assert results["check"]["checked"] == level["requests"] and results["check"]["differ"] == 0
    v2 = loadtest(s.url, concurrency=[8], seeds_per_request=3, duration=1.0, protocol="v2", check=bundle_dir)
    assert v2["levels"][0]["errors"] == {} and v2["check"]["differ"] == 0
    hist = level["batch_images"]
    assert hist and max(v for v in hist.values()) > 0  # batches formed, read from /metrics


def test_overload_answers_only_200_or_503_at_once_and_the_server_stays_up(server):
    s = server("--max-queue", "2", "--max-batch", "4", "--max-delay-ms", "50")

    async def burst():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
            async def one(i):
                t0 = time.perf_counter()
                r = await client.post(f"{s.url}/v1/generate", json={"seeds": list(range(i * 16, i * 16 + 16))})
                return r.status_code, r.headers.get("retry-after"), time.perf_counter() - t0
            return await asyncio.gather(*(one(i) for i in range(64)))

    answers = asyncio.run(burst())
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    assert all(retry == "1" for status, retry, _ in answers if status == 503)
    assert httpx.get(f"{s.url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{s.url}/v1/generate", json={"seeds": [1]}).status_code == 200


def test_sigterm_answers_every_accepted_request_then_exits(server):
    s = server("--max-batch", "1", "--max-delay-ms", "0", "--max-seeds-per-request", "64", "--max-queue-images", "4096")
    sent = {}

    async def flood():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
            async def one(i):
                try:
                    r = await client.post(f"{s.url}/v1/generate", json={"seeds": list(range(i * 64, i * 64 + 64))})
                    return r.status_code, time.perf_counter()
                except httpx.TransportError as e:
                    return type(e).__name__, time.perf_counter()

            tasks = [asyncio.ensure_future(one(i)) for i in range(32)]
            await asyncio.sleep(0.5)  # every request sent and accepted; 2048 images at batch 1: most still queued
            sent["sigterm"] = time.perf_counter()
            s.terminate()
            return await asyncio.gather(*tasks)

    answers = asyncio.run(flood())
    assert [status for status, _ in answers].count(200) == 32, answers  # accepted before SIGTERM: all answered
    after = sum(1 for _, done in answers if done > sent["sigterm"])
    assert after > 0, "every request finished before SIGTERM: the test did not exercise the drain"
    assert s.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    try:
        httpx.get(f"{s.url}/v2/health/live", timeout=2)
        raise AssertionError("the server still answers after draining")
    except httpx.TransportError:
        pass


def test_a_triton_http_client_works_against_ganrt_serve(server, bundle_dir):
    import tritonclient.http as triton

    from ganrt.runtime import load

    s = server()
    client = triton.InferenceServerClient(url=s.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("bundle")
    meta = client.get_model_metadata("bundle")
    assert [i["name"] for i in meta["inputs"]] == ["z", "labels", "seeds"]
    seeds = [21, 22, 23, 24]
    z = latents_from_seeds(seeds, 16)
    labels = labels_from_seeds(seeds, 10).reshape(-1, 1)
    inputs = [triton.InferInput("z", list(z.shape), "FP32"), triton.InferInput("labels", list(labels.shape), "INT64")]
    inputs[0].set_data_from_numpy(z, binary_data=True)
    inputs[1].set_data_from_numpy(labels, binary_data=False)
    result = client.infer("bundle", inputs, outputs=[triton.InferRequestedOutput("images", binary_data=True)])
    with load(bundle_dir) as gen:
        expected = gen.generate(seeds=seeds, labels=labels.reshape(-1))
    np.testing.assert_array_equal(result.as_numpy("images"), expected)
    assert json.loads(json.dumps(result.get_response()))["model_name"] == "bundle"
