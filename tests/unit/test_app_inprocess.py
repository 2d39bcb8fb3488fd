"""The gateway app in-process (no Triton reachable): wiring, errors, health, docs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from serving.gateway.main import create_app
from serving.gateway.settings import Settings
from tests.support.procs import free_port


@pytest.fixture()
def client() -> Iterator[TestClient]:
    settings = Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}", discovery_timeout_s=0.3, triton_timeout_s=1.0
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_healthz_ok_without_triton(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_false_without_triton(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["triton"] is False and r.headers["retry-after"]


def test_classify_without_triton_is_503_with_retry_after(client: TestClient) -> None:
    r = client.post("/v1/classify", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_unknown_route_is_json_404(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/classify" in spec["paths"] and "/v1/models" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_metrics_exposition(client: TestClient) -> None:
    client.get("/nope")
    text = client.get("/metrics").text
    assert "gateway_requests_total" in text and "gateway_request_duration_seconds_bucket" in text


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TRITON_GRPC_URL", "triton:8001")
    monkeypatch.setenv("GATEWAY_MAX_UPLOAD_BYTES", "1234")
    s = Settings()
    assert s.triton_grpc_url == "triton:8001" and s.max_upload_bytes == 1234
