"""The server's edges: the API key (bearer or X-API-Key, constant-time compare, public route groups), request ids
(kept, made, echoed, in every log line), JSON access logs, and HTTPS with a real certificate (trustme's CA)."""

from __future__ import annotations

import json
import logging
import ssl

import httpx
import pytest

KEY = "k" * 20 + "0123456789"


def test_without_the_key_every_private_route_is_401_and_health_and_page_stay_open(inprocess):
    async def go(client):
        out = {}
        for method, path in (("POST", "/v1/generate"), ("GET", "/v1/model"), ("GET", "/v2/models/bundle"),
                             ("POST", "/v2/models/bundle/infer"), ("GET", "/metrics"), ("GET", "/v2"),
                             ("GET", "/v2/models/bundle/config"), ("GET", "/nowhere")):
            out[path] = await client.request(method, path, json={"seeds": [1]})
        for path in ("/v2/health/live", "/v2/health/ready", "/", "/static/explorer.js"):
            out[path] = await client.get(path)
        return out

    answers = inprocess(api_key=KEY).run(go)
    for path in ("/v1/generate", "/v1/model", "/v2/models/bundle", "/v2/models/bundle/infer", "/metrics", "/v2",
                 "/v2/models/bundle/config", "/nowhere"):
        r = answers[path]
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert "API key" in r.json()["error"]
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/static/explorer.js"):
        assert answers[path].status_code == 200, path


@pytest.mark.parametrize("headers,status", [
    ({"Authorization": f"Bearer {KEY}"}, 200), ({"authorization": f"bearer {KEY}"}, 200), ({"X-API-Key": KEY}, 200),
    ({"Authorization": f"Bearer {KEY}x"}, 401), ({"Authorization": f"Basic {KEY}"}, 401), ({"X-API-Key": ""}, 401),
    ({"X-API-Key": KEY[:-1]}, 401), ({"Authorization": "Bearer"}, 401),
    ({"X-API-Key": ("é" * 30).encode("latin-1")}, 401)])
def test_the_key_is_accepted_as_a_bearer_token_or_an_x_api_key_and_nothing_else(inprocess, headers, status):
    async def go(client):
        return await client.post("/v1/generate", json={"seeds": [1]}, headers=headers)

    assert inprocess(api_key=KEY).run(go).status_code == status


def test_public_groups_are_configurable(inprocess):
    async def go(client):
        return (await client.get("/metrics")).status_code, (await client.get("/v2/health/ready")).status_code

    assert inprocess(api_key=KEY, public=("metrics",)).run(go) == (200, 401)


def test_the_key_comes_from_the_environment_too(inprocess, monkeypatch):
    monkeypatch.setenv("GANRT_API_KEY", KEY)

    async def go(client):
        return ((await client.post("/v1/generate", json={"seeds": [1]})).status_code,
                (await client.post("/v1/generate", json={"seeds": [1]}, headers={"X-API-Key": KEY})).status_code)

    assert inprocess().run(go) == (401, 200)


def test_a_short_key_is_refused_as_an_option():
    from ganrt.errors import ConfigError
    from ganrt.serve.options import ServeOptions, check

    with pytest.raises(ConfigError, match="at least 16 characters"):
        check(ServeOptions(api_key="hunter2"))


@pytest.mark.parametrize("given,kept", [("abc-123.def:ghi", True), ("x" * 128, True), ("x" * 129, False),
                                        ("has space", False), ("new\nline", False), (None, False)])
def test_a_request_id_is_kept_when_sane_else_made_and_always_echoed(inprocess, given, kept):
    async def go(client):
        headers = {"X-Request-ID": given} if given is not None else {}
        return await client.post("/v1/generate", json={"seeds": [1]}, headers=headers)

    rid = inprocess().run(go).headers["x-request-id"]
    assert (rid == given) if kept else (rid != given and len(rid) == 32)


def test_json_logs_carry_the_request_id_on_every_line_and_one_access_line_per_request(inprocess, capsys):
    from ganrt.serve.edges import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("info", "json")
    try:
        async def go(client):
            ok = await client.post("/v1/generate", json={"seeds": [1]}, headers={"X-Request-ID": "req-ok"})
            bad = await client.post("/v1/generate", json={"seeds": [-1]}, headers={"X-Request-ID": "req-bad"})
            logging.getLogger("ganrt.serve").info("outside any request")
            return ok, bad

        ok, bad = inprocess().run(go)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [x for x in lines if x["logger"] == "ganrt.access"]
    assert [(x["request_id"], x["status"], x["method"], x["path"]) for x in access] == [
        ("req-ok", 200, "POST", "/v1/generate"), ("req-bad", 400, "POST", "/v1/generate")]
    assert access[0]["bytes"] == len(ok.content) and access[0]["duration_ms"] > 0
    assert any(x["message"] == "outside any request" and x["request_id"] == "-" for x in lines)


def test_https_with_a_real_certificate(bundle_dir, tmp_path):
    trustme = pytest.importorskip("trustme", reason="trustme (dev extra) makes the test certificate")
    from ganrt.serve.process import ServeProcess

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    with ServeProcess(bundle_dir, ["--threads", "1", "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile),
                                   "--api-key", KEY], cafile=cafile) as s:
        assert s.url.startswith("https://")
        r = httpx.post(f"{s.url}/v1/generate", json={"seeds": [1, 2]}, headers={"X-API-Key": KEY},
                       verify=ssl.create_default_context(cafile=str(cafile)))
        assert r.status_code == 200 and len(r.content) > 2 * 32 * 32
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/v2/health/live", verify=True)  # an unknown CA is refused: it is real TLS
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(s.url.replace("https://", "http://") + "/v2/health/live")  # no plain HTTP on that port
