"""/v1/generate and the Open Inference Protocol v2, in-process: exact images, provenance, and a 4xx JSON error
carrying the GanrtError's message for every kind of bad request (never a 500)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from ganrt.latents import labels_from_seeds, latents_from_seeds


@pytest.fixture(scope="module")
def offline(bundle_dir):
    """The same variant the server picks, generating offline."""
    from ganrt.runtime import load

    gen = load(bundle_dir)
    yield gen
    gen.close()


def test_v1_npy_is_exactly_the_offline_images_with_default_labels(inprocess, offline):
    async def go(client):
        r = await client.post("/v1/generate", json={"seeds": [3, 1, 4, 1, 5]})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
        assert r.headers["x-ganrt-variant"] == offline.variant
        return np.load(io.BytesIO(r.content))

    images = inprocess().run(go)
    seeds = [3, 1, 4, 1, 5]
    np.testing.assert_array_equal(images, offline.generate(seeds=seeds, labels=labels_from_seeds(seeds, 10)))


def test_v1_png_carries_the_provenance_of_ganrt_generate_and_zip_one_png_per_seed(inprocess, offline):
    async def go(client):
        one = await client.post("/v1/generate", json={"seeds": [7], "labels": 2, "format": "png"})
        many = await client.post("/v1/generate", json={"seeds": [7, 8], "labels": [2, 3], "format": "zip"})
        return one, many

    one, many = inprocess().run(go)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(one.content))
    assert png.text["seed"] == "7" and png.text["label"] == "2" and png.text["variant"] == offline.variant
    assert len(png.text["bundle_sha256"]) == 64 and "machine-generated" in png.text["generated"]
    expected = offline.generate(seeds=[7, 8], labels=[2, 3])
    np.testing.assert_array_equal(np.asarray(png)[..., None], expected[0])
    names = zipfile.ZipFile(io.BytesIO(many.content)).namelist()
    assert names == ["0000-seed7-label002.png", "0001-seed8-label003.png"]
    second = Image.open(io.BytesIO(zipfile.ZipFile(io.BytesIO(many.content)).read(names[1])))
    np.testing.assert_array_equal(np.asarray(second)[..., None], expected[1])


BAD_V1 = [
    ({"seeds": [-1]}, "seed -1 is out of range"),
    ({"seeds": [2**64]}, r"out of range: seeds are integers in \[0, 2\^64-1\]"),
    ({"seeds": [1.5]}, "seeds must be integers"),
    ({"seeds": ["3"]}, "seeds must be integers"),
    ({"seeds": [True]}, "seeds must be integers"),
    ({"seeds": []}, "non-empty list"),
    ({"seeds": list(range(33))}, "at most 32"),
    ({"seeds": [1], "labels": 10}, "label 10 is out of range"),
    ({"seeds": [1, 2], "labels": [1]}, "one per image"),
    ({"seeds": [1], "labels": "cat"}, "labels must be integers"),
    ({"seeds": [1], "truncation": 0.7}, "has no truncation"),
    ({"seeds": [1, 2], "format": "png"}, "format png returns one image"),
    ({"seeds": [1], "format": "gif"}, "format must be one of npy, png, zip"),
    ({"seeds": [1], "colour": "blue"}, "unknown field"),
    ({"labels": [1]}, "seeds is required"),
    ([1, 2, 3], "must be a JSON object"),
]


@pytest.mark.parametrize("body, message", BAD_V1)
def test_bad_v1_requests_answer_400_with_the_message(inprocess, body, message):
    async def go(client):
        return await client.post("/v1/generate", json=body)

    r = inprocess(max_seeds_per_request=32).run(go)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    import re

    assert re.search(message, r.json()["error"]), r.json()


def test_garbage_bodies_and_oversized_bodies_are_4xx(inprocess):
    async def go(client):
        garbage = await client.post("/v1/generate", content=b"\x00\xff not json")
        big = await client.post("/v1/generate", content=b"[" + b"1," * 600 + b"1]")
        unknown = await client.get("/v3/nothing")
        wrong_method = await client.get("/v1/generate")
        return garbage, big, unknown, wrong_method

    garbage, big, unknown, wrong_method = inprocess(max_body_bytes=1000).run(go)
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]
    assert big.status_code == 413 and "limit of 1000 bytes" in big.json()["error"]
    assert unknown.status_code == 404 and "no route" in unknown.json()["error"]
    assert wrong_method.status_code == 405


def test_oip_v2_health_metadata_and_infer_with_z_seeds_and_binary_data(inprocess, offline):
    z = latents_from_seeds([11, 12, 13], 16)

    async def go(client):
        out = {"live": await client.get("/v2/health/live"), "ready": await client.get("/v2/health/ready"),
               "server": await client.get("/v2"), "meta": await client.get("/v2/models/bundle"),
               "model_ready": await client.get("/v2/models/bundle/ready"),
               "missing": await client.get("/v2/models/other")}
        out["z"] = await client.post("/v2/models/bundle/infer", json={"id": "r1", "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [3, 16], "data": z.tolist()},
            {"name": "labels", "datatype": "INT64", "shape": [3, 1], "data": [1, 2, 3]}]})
        out["seeds"] = await client.post("/v2/models/bundle/versions/1/infer", json={"inputs": [
            {"name": "seeds", "datatype": "UINT64", "shape": [3], "data": [11, 12, 13]},
            {"name": "labels", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]})
        head = json.dumps({"inputs": [
            {"name": "z", "datatype": "FP32", "shape": [3, 16], "parameters": {"binary_data_size": z.nbytes}},
            {"name": "labels", "datatype": "INT64", "shape": [3, 1], "parameters": {"binary_data_size": 24}}],
            "outputs": [{"name": "images", "parameters": {"binary_data": True}}]}).encode()
        out["binary"] = await client.post("/v2/models/bundle/infer",
                                          content=head + z.tobytes() + np.array([1, 2, 3], np.int64).tobytes(),
                                          headers={"Inference-Header-Content-Length": str(len(head))})
        return out

    r = inprocess().run(go)
    assert r["live"].status_code == 200 and r["ready"].status_code == 200 and r["model_ready"].status_code == 200
    assert "binary_tensor_data" in r["server"].json()["extensions"]
    meta = r["meta"].json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("z", "FP32", [-1, 16]), ("labels", "INT64", [-1]), ("seeds", "INT64", [-1])]
    assert meta["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 1]}]
    assert r["missing"].status_code == 404 and "unknown model 'other'" in r["missing"].json()["error"]
    expected = offline.generate(z=z, labels=[1, 2, 3])
    body = r["z"].json()
    assert body["id"] == "r1" and body["model_name"] == "bundle"
    (out,) = body["outputs"]
    assert out["name"] == "images" and out["datatype"] == "UINT8" and out["shape"] == [3, 32, 32, 1]
    np.testing.assert_array_equal(np.asarray(out["data"], np.uint8).reshape(out["shape"]), expected)
    (out,) = r["seeds"].json()["outputs"]
    np.testing.assert_array_equal(np.asarray(out["data"], np.uint8).reshape(out["shape"]), expected)
    binary = r["binary"]
    n = int(binary.headers["inference-header-content-length"])
    (out,) = json.loads(binary.content[:n])["outputs"]
    assert out["parameters"]["binary_data_size"] == expected.nbytes
    np.testing.assert_array_equal(np.frombuffer(binary.content[n:], np.uint8).reshape(out["shape"]), expected)


BAD_V2 = [
    ({"inputs": []}, 400, "inputs"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}, 400, "unknown input 'x'"),
    ({"inputs": [{"name": "z", "datatype": "INT64", "shape": [1, 16], "data": [0] * 16}]}, 400,
     "input z must have datatype FP32"),
    ({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 8], "data": [0] * 8}]}, 400, r"shape \[B, 16\]"),
    ({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 16], "data": [0] * 15}]}, 400, "15 values"),
    ({"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [1]},
                 {"name": "z", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]}, 400, "exactly one of z"),
    ({"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [-5]}]}, 400, "out of range"),
    ({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]}, 400, "pass labels"),
    ({"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [1]},
                 {"name": "labels", "datatype": "INT64", "shape": [1], "data": [99]}]}, 400, "label 99"),
    ({"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [1]}],
      "outputs": [{"name": "logits"}]}, 400, 'one output, "images"'),
]


@pytest.mark.parametrize("body, status, message", BAD_V2)
def test_bad_v2_requests_answer_4xx_with_the_message(inprocess, body, status, message):
    import re

    async def go(client):
        return await client.post("/v2/models/bundle/infer", json=body)

    r = inprocess().run(go)
    assert r.status_code == status, r.text
    assert re.search(message, r.json()["error"]), r.json()


def test_metrics_count_requests_images_errors_and_formed_batches(inprocess):
    async def go(client):
        await client.post("/v1/generate", json={"seeds": [1, 2, 3]})
        await client.post("/v1/generate", json={"seeds": [-1]})
        return (await client.get("/metrics")).text

    text = inprocess().run(go)
    assert 'ganrt_requests_total{protocol="v1"} 1.0' in text and "ganrt_images_total 3.0" in text
    assert 'ganrt_errors_total{status="400"} 1.0' in text
    for name in ("ganrt_queue_depth", "ganrt_batch_images_bucket", "ganrt_queue_wait_seconds_bucket",
                 "ganrt_compute_seconds_bucket", "ganrt_encode_seconds_bucket"):
        assert name in text


def test_a_backend_failure_answers_500_and_the_server_stays_up(inprocess):
    from ganrt.errors import BackendError

    app = inprocess()

    async def go(client):
        real = app.service.gen.generate
        app.service.gen.generate = lambda **kw: (_ for _ in ()).throw(BackendError("onnxruntime-fp32 failed: boom"))
        failed = await client.post("/v1/generate", json={"seeds": [1]})
        app.service.gen.generate = real
        ok = await client.post("/v1/generate", json={"seeds": [1]})
        return failed, ok

    failed, ok = app.run(go)
    assert failed.status_code == 500 and "boom" in failed.json()["error"]
    assert ok.status_code == 200


def test_the_page_and_model_description_are_served(inprocess):
    async def go(client):
        return (await client.get("/"), await client.get("/static/explorer.js"), await client.get("/v1/model"),
                await client.get("/static/../manifest.json"))

    page, js, model, escape = inprocess().run(go)
    assert page.status_code == 200 and "seed explorer" in page.text and "cdn" not in page.text.lower()
    assert js.status_code == 200 and "parseNpy" in js.text
    info = model.json()
    assert info["spec"]["num_classes"] == 10 and info["batching"]["max_batch"] == 64
    assert escape.status_code == 404
