"""The guard in-process (no Triton): keys, rate limits, request ids, deadlines, CORS, OpenAPI, logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.gateway import auth, context
from serving.gateway import guard as g
from serving.gateway.errors import APIError
from serving.gateway.main import create_app
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import Settings
from tests.support.procs import free_port

KEY = "unit-test-key-0123456789"


def settings(**kw: object) -> Settings:
    return Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}", discovery_timeout_s=0.2, triton_timeout_s=1.0, **kw
    )


@pytest.fixture()
def secured(tmp_path: Path) -> Iterator[TestClient]:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\nlimited-key-0123456789 2/minute  # a per-key limit\n")
    with TestClient(create_app(settings(api_keys="env-key-0123456789", api_keys_file=keys))) as c:
        yield c


def test_extract_key() -> None:
    assert auth.extract_key([("Authorization", "Bearer abc")]) == "abc"
    assert auth.extract_key([("authorization", "bearer  abc ")]) == "abc"
    assert auth.extract_key([("x-api-key", "k")]) == "k"
    assert auth.extract_key([("authorization", "Basic abc")]) is None
    assert auth.extract_key([]) is None


def test_keys_compare_and_never_expose_the_key(tmp_path: Path) -> None:
    keys = auth.ApiKeys.from_settings(settings(api_keys=" a-key , b-key ,"))
    assert len(keys) == 2 and keys.enabled
    p = keys.lookup("b-key")
    assert p is not None and p.id == auth.key_id("b-key") and "b-key" not in p.id
    assert keys.lookup("b-ke") is None and keys.lookup(None) is None
    assert "a-key" not in repr(settings(api_keys="a-key"))  # SecretStr


def test_keys_file_with_bad_limit_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text("k1\nk2 lots\n")
    with pytest.raises(ValueError, match="keys:2"):
        auth.ApiKeys.from_settings(settings(api_keys_file=f))


def test_request_id_sanity() -> None:
    assert context.sane_request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a b", "x" * 129, "é"):
        assert len(context.sane_request_id(bad)) == 32


def test_deadline_header() -> None:
    guard = g.Guard(settings(max_request_timeout_s=5), GatewayMetrics())
    import time

    now = time.monotonic()
    assert 0.9 < guard.deadline(None) - now < 1.1  # default: triton_timeout_s
    assert 4.9 < guard.deadline("500") - now < 5.1  # capped
    for bad in ("soon", "0", "0.01", "nan", "inf", "-1"):
        with pytest.raises(APIError) as info:
            guard.deadline(bad)
        assert info.value.status == 422


def test_authorize_for_the_grpc_front_door() -> None:
    guard = g.Guard(settings(api_keys=KEY, rate_limit="2/minute"), GatewayMetrics())

    async def run() -> list[int]:
        out = []
        for key in (None, "nope", KEY, KEY, KEY):
            try:
                await guard.authorize(key, "/v1/classify", "10.0.0.1")
                out.append(200)
            except APIError as exc:
                out.append(exc.status)
        out.append(200 if (await guard.authorize(None, "/healthz")).id == "exempt" else 0)
        return out

    assert asyncio.run(run()) == [401, 401, 200, 200, 429, 200]


def test_admission_counter() -> None:
    guard = g.Guard(settings(max_in_flight=1), GatewayMetrics())

    async def run() -> int:
        async with guard.admission():
            with pytest.raises(APIError) as info:
                async with guard.admission():
                    pass
            return info.value.status

    assert asyncio.run(run()) == 429 and guard.in_flight.current == 0


def test_http_auth_exemptions_and_request_id(secured: TestClient) -> None:
    r = secured.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer" and len(r.headers["x-request-id"]) == 32
    assert secured.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert secured.get("/v1/models", headers={"X-API-Key": "env-key-0123456789"}).status_code == 200
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert secured.get(path).status_code == 200
    r = secured.get("/healthz", headers={"X-Request-ID": "my-id-1"})
    assert r.headers["x-request-id"] == "my-id-1"
    assert 'gateway_rejected_total{reason="unauthorized"} 1.0' in secured.get("/metrics").text


def test_per_key_limit_from_the_file(secured: TestClient) -> None:
    h = {"X-API-Key": "limited-key-0123456789"}
    assert [secured.get("/v1/models", headers=h).status_code for _ in range(2)] == [200, 200]
    r = secured.get("/v1/models", headers=h)
    assert (
        r.status_code == 429
        and r.json()["error"]["code"] == "rate_limited"
        and int(r.headers["retry-after"]) >= 1
    )
    assert secured.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200


def test_anonymous_rate_limit_without_keys() -> None:
    with TestClient(create_app(settings(rate_limit="1/minute"))) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models").status_code == 429
        assert c.get("/healthz").status_code == 200


def test_bad_timeout_header_is_422_json() -> None:
    with TestClient(create_app(settings())) as c:
        r = c.get("/v1/models", headers={"X-Request-Timeout": "later"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"


def test_cors_off_by_default_on_when_configured() -> None:
    pre = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(settings())) as c:
        r = c.options("/v1/classify", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(settings(cors_origins="https://ui.example", api_keys=KEY))) as c:
        r = c.options("/v1/classify", headers={**pre, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ui.example"
        r = c.get("/v1/models", headers={"Origin": "https://ui.example"})  # 401, still with CORS headers
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://ui.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        r = c.options("/v1/classify", headers={**pre, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_openapi_documents_real_error_responses() -> None:
    with TestClient(create_app(settings())) as c:
        spec = c.get("/openapi.json").json()
    assert (
        "HTTPValidationError" not in spec["components"]["schemas"]
        and "securitySchemes" not in spec["components"]
    )
    op = spec["paths"]["/v1/classify"]["post"]
    for status in ("400", "404", "413", "415", "422", "429", "503", "504"):
        assert op["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }, status
    assert (
        "Retry-After" in op["responses"]["429"]["headers"]
        and "X-Request-ID" in op["responses"]["200"]["headers"]
    )
    assert any(p["name"] == "X-Request-Timeout" for p in op["parameters"]) and "security" not in op
    health = spec["paths"]["/healthz"]["get"]
    assert "429" not in health["responses"] and not any(
        p["name"] == "X-Request-Timeout" for p in health.get("parameters", [])
    )
    with TestClient(create_app(settings(api_keys=KEY))) as c:
        spec = c.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "401" in spec["paths"]["/v1/classify"]["post"]["responses"]


def test_request_log_is_json_without_secrets(capfd: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(settings(api_keys=KEY))) as c:
        c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "log-test-1"})
    err = capfd.readouterr().err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{") and "log-test-1" in x]
    assert lines, err[-2000:]
    entry = lines[-1]
    assert entry["event"] == "request" and entry["route"] == "/v1/models" and entry["status"] == 200
    assert (
        entry["request_id"] == "log-test-1" and entry["key_id"] == auth.key_id(KEY) and "latency_ms" in entry
    )
    assert KEY not in err


def test_unexpected_error_is_json_500_with_request_id(capfd: pytest.CaptureFixture[str]) -> None:
    app = create_app(settings())

    async def boom() -> None:
        raise RuntimeError("secret detail")

    app.add_api_route("/v1/boom", boom)
    with TestClient(app) as c:
        r = c.get("/v1/boom", headers={"X-Request-ID": "boom-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "boom-1"
    assert r.json()["error"]["code"] == "internal_error" and "secret detail" not in r.text
    err = capfd.readouterr().err
    assert "boom-1" in err and "RuntimeError" in err  # the traceback is logged, with the request id


def test_invalid_utf8_json_body_is_422() -> None:
    from fastapi import Body

    app = create_app(settings())

    async def echo(prompt: str = Body(..., embed=True)) -> dict[str, str]:
        return {"prompt": prompt}

    app.add_api_route("/v1/echo", echo, methods=["POST"])
    with TestClient(app) as c:
        r = c.post(
            "/v1/echo", content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_utf8"
        assert c.post("/v1/echo", json={"prompt": "ok"}).json() == {"prompt": "ok"}


def test_invalid_utf8_on_openai_routes_answers_in_openai_shape() -> None:
    """The openai SDK reads ``{"error": {"message", "type", "param", "code"}}``: chat answers a body it
    cannot decode with OpenAI's 400, embeddings keeps our 422; both in that shape."""
    app = create_app(settings())
    raw = b'{"model": "m", "input": "\xff", "messages": []}'
    with TestClient(app) as c:
        for path, status in (("/v1/chat/completions", 400), ("/v1/embeddings", 422)):
            r = c.post(path, content=raw, headers={"content-type": "application/json"})
            err = r.json()["error"]
            assert r.status_code == status and err["code"] == "invalid_utf8", (path, r.text)
            assert err["type"] == "invalid_request_error" and "param" in err
