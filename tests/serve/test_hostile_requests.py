"""Requests an attacker would send, in-process: no answer larger than its images (no amplification through
echoed text), a 4xx carrying the message for every crafted body (never a 500), and RFC 9110's Allow header on
405 answers."""

from __future__ import annotations

import json

import pytest


def _v2(inputs, **extra):
    return {"inputs": inputs, **extra}


SEEDS = {"name": "seeds", "datatype": "INT64", "shape": [2], "data": [1, 2]}


def test_an_id_full_of_null_data_items_is_refused_not_amplified(inprocess):
    # The answer used to be built by replacing '"data": null' in the whole JSON text, the echoed id included:
    # every such item in the id received a copy of the images.
    evil_id = '{"data": null}' * 1000

    async def go(client):
        return await client.post("/v2/models/bundle/infer", json=_v2([SEEDS], id=evil_id))

    r = inprocess().run(go)
    assert r.status_code == 400 and "id" in r.json()["error"] and "256" in r.json()["error"]


def test_a_short_id_with_the_splice_marker_is_echoed_verbatim_and_the_answer_is_one_copy_of_the_images(inprocess):
    marker = '"data": null'

    async def go(client):
        return await client.post("/v2/models/bundle/infer", json=_v2([SEEDS], id=marker * 10))

    r = inprocess().run(go)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == marker * 10
    (out,) = body["outputs"]
    assert len(out["data"]) == 2 * 32 * 32 * 1
    assert len(r.content) < 2 * 32 * 32 * 4 + 1000  # one copy of the pixels as text, and a small header


def test_the_binary_answer_is_header_then_exactly_the_image_bytes(inprocess):
    async def go(client):
        return await client.post("/v2/models/bundle/infer",
                                 json=_v2([SEEDS], id='"data": null', parameters={"binary_data_output": True}))

    r = inprocess().run(go)
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert head["id"] == '"data": null'
    assert len(r.content) - n == head["outputs"][0]["parameters"]["binary_data_size"] == 2 * 32 * 32


CRAFTED = [
    # (body, status, words in the message)
    ({"inputs": [{"name": {"a": 1}, "datatype": "INT64", "shape": [1], "data": [1]}]}, 400, "unknown input"),
    ({"inputs": [{"name": ["seeds"], "datatype": "INT64", "shape": [1], "data": [1]}]}, 400, "unknown input"),
    ({"inputs": [{**SEEDS, "datatype": {"x": 1}}]}, 400, "datatype"),
    ({"inputs": [{**SEEDS, "shape": [2**40, 2**40]}]}, 400, "shape"),
    ({"inputs": [{**SEEDS, "shape": [2**62, 2**62, 2**62]}]}, 400, "shape"),
    ({"inputs": [{**SEEDS, "shape": [10**30]}]}, 400, "shape"),
    ({"inputs": [SEEDS], "id": 5}, 400, "id"),
    ({"inputs": [SEEDS], "id": "x" * 257}, 400, "id"),
    ({"inputs": [SEEDS], "parameters": []}, 400, "parameters"),
    ({"inputs": [SEEDS], "outputs": [{"name": "images", "parameters": 3}]}, 400, "parameters"),
    ({"inputs": [{**SEEDS, "data": [[1], [2, 3]]}]}, 400, "data"),
    ({"inputs": [{**SEEDS, "data": ["a", "b"]}]}, 400, "integers"),
    ({"inputs": [{**SEEDS, "data": [1e300, 2]}]}, 400, "integers"),
    ({"inputs": [{**SEEDS, "data": [True, False]}]}, 400, "integers"),
    ({"inputs": [{**SEEDS, "data": [{"a": 1}, 2]}]}, 400, "integers"),
    ({"inputs": [{**SEEDS, "parameters": {"binary_data_size": {"a": 1}}}]}, 400, "binary_data_size"),
]


@pytest.mark.parametrize("body,status,words", CRAFTED, ids=[str(i) for i in range(len(CRAFTED))])
def test_crafted_v2_bodies_answer_4xx_with_the_message(inprocess, body, status, words):
    async def go(client):
        return await client.post("/v2/models/bundle/infer", json=body)

    r = inprocess().run(go)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@pytest.mark.parametrize("route", ["/v2/models/bundle/infer", "/v1/generate"])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(inprocess, route):
    deep = b"[" * 200_000 + b"]" * 200_000

    async def go(client):
        return await client.post(route, content=deep, headers={"content-type": "application/json"})

    r = inprocess().run(go)
    assert r.status_code == 400 and "nested" in r.json()["error"]


def test_405_names_the_allowed_methods(inprocess):
    async def go(client):
        return await client.get("/v2/models/bundle/infer"), await client.delete("/v2/health/live")

    infer, live = inprocess().run(go)
    assert infer.status_code == 405 and infer.headers["allow"] == "POST"
    assert live.status_code == 405 and live.headers["allow"] == "GET, HEAD"
