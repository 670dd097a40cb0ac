"""`ganrt serve --grpc-port`: Triton's own gRPC client (tritonclient.grpc) gets exactly the offline images, for
seeds and for latents, in raw or typed contents; the health, metadata and config RPCs answer as the protocol's
messages say; a bad request is a gRPC status with the message the HTTP v2 path sends for the same request; gRPC
shares the batcher and metrics; 8 threads get what one gets; `ganrt loadtest --protocol grpc` checks every
answer; and SIGTERM answers every RPC in flight before the server exits."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import numpy as np
import pytest

grpc_client = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]: pip install 'ganrt[triton]'")

import tritonclient.http as http_client  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ganrt.latents import labels_from_seeds, latents_from_seeds  # noqa: E402
from ganrt.serve.process import ServeProcess, free_port  # noqa: E402


@pytest.fixture(scope="module")
def served(bundle_dir):
    port = free_port()
    with ServeProcess(bundle_dir, ["--threads", "1", "--grpc-port", str(port), "--max-batch", "16",
                                   "--max-delay-ms", "2"]) as server:
        server.grpc = f"127.0.0.1:{port}"
        yield server


def test_a_triton_grpc_client_gets_the_offline_images_for_seeds_and_latents(served, offline, oip_inputs):
    client = grpc_client.InferenceServerClient(served.grpc)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("bundle")
    assert client.get_server_metadata().name == "ganrt"
    meta = client.get_model_metadata("bundle", as_json=True)
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("z", "FP32"), ("labels", "INT64"),
                                                                   ("seeds", "INT64")]
    assert meta["outputs"][0]["shape"] == ["-1", "32", "32", "1"]
    seeds = [5, 6, 7]
    by_seed = client.infer("bundle", oip_inputs(grpc_client, seeds=np.array(seeds, np.int64).reshape(-1, 1)))
    np.testing.assert_array_equal(by_seed.as_numpy("images"),
                                  offline.generate(seeds=seeds, labels=labels_from_seeds(seeds, 10)))
    z, labels = latents_from_seeds([40, 41], 16), np.array([[9], [0]], np.int64)
    by_z = client.infer("bundle", oip_inputs(grpc_client, z=z, labels=labels), request_id="r-1")
    np.testing.assert_array_equal(by_z.as_numpy("images"), offline.generate(z=z, labels=[9, 0]))
    assert by_z.get_response().id == "r-1" and by_z.get_response().model_name == "bundle"


def test_typed_contents_work_as_raw_ones_do(served, offline):
    """InferTensorContents (fp32_contents, int64_contents) instead of raw_input_contents, through the raw stub."""
    import grpc

    z = latents_from_seeds([3, 4], 16)
    request = service_pb2.ModelInferRequest(model_name="bundle")
    t = request.inputs.add(name="z", datatype="FP32", shape=[2, 16])
    t.contents.fp32_contents.extend(z.reshape(-1).tolist())
    t = request.inputs.add(name="labels", datatype="INT64", shape=[2])
    t.contents.int64_contents.extend([1, 2])
    with grpc.insecure_channel(served.grpc) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    (out,) = response.outputs
    images = np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(list(out.shape))
    np.testing.assert_array_equal(images, offline.generate(z=z, labels=[1, 2]))


def test_model_config_is_tritons_with_the_served_variant_and_batching(served, offline):
    config = grpc_client.InferenceServerClient(served.grpc).get_model_config("bundle").config
    assert config.name == "bundle" and config.max_batch_size == 16
    assert config.parameters["variant"].string_value == offline.variant
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(i.name, i.optional) for i in config.input] == [("z", True), ("seeds", True), ("labels", True)]


def _raw_request(**fields):
    request = service_pb2.ModelInferRequest(model_name="bundle")
    for name, (datatype, shape) in fields.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize("model, arrays, code, message", [
    ("nope", {"seeds": np.array([[1]], np.int64)}, "NOT_FOUND", "unknown model 'nope'"),
    ("bundle", {"seeds": np.array([[1]], np.int64), "labels": np.array([[30]], np.int64)}, "INVALID_ARGUMENT",
     "label 30 is out of range"),
    ("bundle", {"seeds": np.array([[1]], np.int64), "z": np.zeros((1, 16), np.float32)}, "INVALID_ARGUMENT",
     "exactly one of z"),
    ("bundle", {"z": np.full((1, 16), np.nan, np.float32), "labels": np.array([[1]], np.int64)},
     "INVALID_ARGUMENT", "NaN/Inf"),
    ("bundle", {"z": np.zeros((1, 15), np.float32), "labels": np.array([[1]], np.int64)}, "INVALID_ARGUMENT",
     "shape \\[B, 16\\]"),
    ("bundle", {"z": np.zeros((1, 16), np.float32)}, "INVALID_ARGUMENT", "class-conditional"),
    ("bundle", {"seeds": np.arange(1025, dtype=np.int64).reshape(-1, 1)}, "INVALID_ARGUMENT", "at most 1024"),
])
def test_a_bad_request_is_a_status_code_with_the_message_of_the_http_path(served, oip_inputs, model, arrays, code,
                                                                          message):
    with pytest.raises(InferenceServerException, match=message) as e:
        grpc_client.InferenceServerClient(served.grpc).infer(model, oip_inputs(grpc_client, **arrays))
    assert e.value.status() == f"StatusCode.{code}"
    with pytest.raises(InferenceServerException) as h:  # the same request over HTTP: the same words
        http_client.InferenceServerClient(served.url.removeprefix("http://")).infer(model,
                                                                                   oip_inputs(http_client, **arrays))
    assert h.value.message() == e.value.message()


def test_raw_contents_that_do_not_fit_the_inputs_are_refused_with_the_reason(served):
    import grpc

    request = _raw_request(z=("FP32", [1, 16]), labels=("INT64", [1, 1]))
    request.raw_input_contents.append(np.zeros(16, np.float32).tobytes())  # one raw entry for two inputs
    short = _raw_request(seeds=("INT64", [2, 1]))
    short.raw_input_contents.append(np.zeros(1, np.int64).tobytes())  # 8 bytes for 2 seeds
    with grpc.insecure_channel(served.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for bad, message in ((request, "raw_input_contents holds 1 entries for 2 inputs"),
                             (short, "binary_data_size 8 does not match shape")):
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(bad)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()


def test_grpc_shares_the_metrics_of_the_http_routes(served, oip_inputs):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    client = grpc_client.InferenceServerClient(served.grpc)
    client.infer("bundle", oip_inputs(grpc_client, seeds=np.array([[11], [12]], np.int64)))
    with pytest.raises(InferenceServerException):
        client.infer("bundle", oip_inputs(grpc_client, seeds=np.array([[-1]], np.int64)))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(httpx.get(f"{served.url}/metrics").text) for s in f.samples}
    assert samples[("ganrt_requests_total", (("protocol", "grpc"),))] >= 1
    assert samples[("ganrt_errors_total", (("status", "400"),))] >= 1
    assert samples[("ganrt_request_seconds_count", (("protocol", "grpc"),))] >= 1


def test_eight_threads_get_what_one_thread_gets(served, offline, oip_inputs):
    results, errors = {}, []

    def worker(k):
        client = grpc_client.InferenceServerClient(served.grpc)
        try:
            for i in range(4):
                seeds = list(range(1000 * k + 10 * i, 1000 * k + 10 * i + 1 + (k + i) % 5))
                out = client.infer("bundle", oip_inputs(grpc_client, seeds=np.array(seeds, np.int64).reshape(-1, 1)))
                results[tuple(seeds)] = out.as_numpy("images")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 32
    for seeds, images in results.items():
        np.testing.assert_array_equal(images, offline.generate(seeds=list(seeds),
                                                               labels=labels_from_seeds(list(seeds), 10)))


def test_loadtest_over_grpc_checks_every_answer(served, bundle_dir):
    from ganrt.serve.loadtest import loadtest

    result = loadtest(served.grpc, concurrency=[8], seeds_per_request=4, duration=1.5, protocol="grpc",
                      check=bundle_dir)
    (level,) = result["levels"]
    assert result["model"] == "bundle" and level["errors"] == {} and level["requests"] > 0
    assert result["check"] == {"checked": level["requests"], "differ": 0}
    assert result["server"]["variant"] and level["served_vs_offline"] > 0


def test_sigterm_answers_every_rpc_in_flight_then_exits(bundle_dir, oip_inputs):
    import tritonclient.grpc.aio as aio

    port = free_port()
    server = ServeProcess(bundle_dir, ["--threads", "1", "--grpc-port", str(port), "--max-batch", "1",
                                       "--max-delay-ms", "0", "--max-seeds-per-request", "64",
                                       "--max-queue-images", "4096"])
    sent = {}

    async def flood():
        client = aio.InferenceServerClient(f"127.0.0.1:{port}")

        async def one(i):
            seeds = np.arange(i * 64, i * 64 + 64, dtype=np.int64).reshape(-1, 1)
            try:
                await client.infer("bundle", oip_inputs(grpc_client, seeds=seeds))
                return "OK", time.perf_counter()
            except InferenceServerException as e:
                return e.status(), time.perf_counter()

        tasks = [asyncio.ensure_future(one(i)) for i in range(32)]
        await asyncio.sleep(0.5)  # every RPC sent and accepted; 2048 images at batch 1: most still queued
        sent["sigterm"] = time.perf_counter()
        server.terminate()
        try:
            return await asyncio.gather(*tasks)
        finally:
            await client.close()

    try:
        answers = asyncio.run(flood())
        assert [status for status, _ in answers].count("OK") == 32, answers
        assert sum(1 for _, done in answers if done > sent["sigterm"]) > 0, "nothing was left to drain"
        assert server.proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        server.stop()


def _dropped(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return {s.labels.get("reason", ""): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "ganrt_images_dropped_total"}


@pytest.mark.parametrize("how", ["oip-timeout-parameter", "grpc-deadline"])
def test_a_deadline_drops_the_queued_work_and_answers_deadline_exceeded(served, oip_inputs, how):
    import grpc

    client = grpc_client.InferenceServerClient(served.grpc)
    before = _dropped(served.url)
    seeds = np.arange(10_000, 11_024, dtype=np.int64).reshape(-1, 1)  # 64 batches of 16: far more than 5 ms
    with pytest.raises(InferenceServerException) as e:
        if how == "oip-timeout-parameter":
            client.infer("bundle", oip_inputs(grpc_client, seeds=seeds), timeout=5_000)  # microseconds
        else:
            client.infer("bundle", oip_inputs(grpc_client, seeds=seeds), client_timeout=0.005)
    assert e.value.status() == f"StatusCode.{grpc.StatusCode.DEADLINE_EXCEEDED.name}"
    for _ in range(50):  # the server sees the client's deadline pass (or its cancel) and drops the queued work
        after = _dropped(served.url)
        if after["expired"] + after["cancelled"] > before["expired"] + before["cancelled"]:
            break
        time.sleep(0.1)
    assert after["expired"] + after["cancelled"] - before["expired"] - before["cancelled"] > 0
    assert client.infer("bundle", oip_inputs(grpc_client, seeds=seeds[:2])).as_numpy("images").shape[0] == 2


def test_behind_an_api_key_grpc_wants_it_in_the_metadata(bundle_dir, oip_inputs):
    key = "grpc-key-" + "y" * 16
    port = free_port()
    with ServeProcess(bundle_dir, ["--threads", "1", "--grpc-port", str(port), "--api-key", key]):
        client = grpc_client.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and client.is_server_ready()  # health is public by default
        inputs = oip_inputs(grpc_client, seeds=np.array([[1]], np.int64))
        with pytest.raises(InferenceServerException) as e:
            client.infer("bundle", inputs)
        assert "UNAUTHENTICATED" in e.value.status() and "API key" in e.value.message()
        with pytest.raises(InferenceServerException):
            client.infer("bundle", inputs, headers={"x-api-key": key + "x"})
        for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
            assert client.infer("bundle", inputs, headers=headers).as_numpy("images").shape == (1, 32, 32, 1)
