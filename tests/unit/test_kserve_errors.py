"""The KServe door's error form in-process (no Triton): ``{"error": "<message>"}``, 400 for 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.gateway import errors
from serving.gateway.main import create_app
from tests.unit.test_guard import KEY, settings


@pytest.mark.parametrize(
    ("path", "kserve"),
    [("/v2", True), ("/v2/models/m/infer", True), ("/v2x", False), ("/v1/classify", False), ("/", False)],
)
def test_is_kserve(path: str, kserve: bool) -> None:
    assert errors.is_kserve(path) is kserve


def test_kserve_body_maps_422_to_400() -> None:
    assert errors.kserve_body(422, "bad tensor") == (400, {"error": "bad tensor"})
    assert errors.kserve_body(404, "no model") == (404, {"error": "no model"})


def test_every_error_on_the_kserve_door_is_kserve_form() -> None:
    with TestClient(create_app(settings(api_keys=KEY))) as c:
        r = c.get("/v2/models/m")  # the guard's 401
        assert r.status_code == 401 and r.json() == {"error": r.json()["error"]}
        assert isinstance(r.json()["error"], str) and "API key" in r.json()["error"]
        auth = {"X-API-Key": KEY}
        r = c.post("/v2/repository/models/m/unload", headers=auth)  # refused, not hidden
        assert r.status_code == 403 and "admin" in r.json()["error"]
        r = c.get("/v2/models/m/versions/0", headers=auth)  # path validation: 400, not 422
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        r = c.post("/v2/models/m/infer", content=b"{nope", headers=auth)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        r = c.get("/v2/nothing/here", headers=auth)
        assert r.status_code == 404 and isinstance(r.json()["error"], str)
        r = c.get("/v1/models")  # the task routes keep their shape
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_openapi_documents_the_kserve_error_form() -> None:
    with TestClient(create_app(settings())) as c:
        spec = c.get("/openapi.json").json()
    assert spec["components"]["schemas"]["KServeError"]["properties"]["error"]["type"] == "string"
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/stats"):
        for op in spec["paths"][path].values():
            assert "422" not in op["responses"]
            assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/KServeError"
            }
    assert "/v2/repository/index" in spec["paths"] and "/v2/models/stats" in spec["paths"]
