"""The OpenAPI document describes what the gateway really answers, so a schema fuzzer can hold us to it.

FastAPI documents only the happy path and its own 422 shape (``HTTPValidationError``), which is
not what we send. After generation we patch every operation:

* every 4xx/5xx response carries our error body ``{"error": {"code", "message", "details"?}}``;
* operations behind the guard (everything but health, metrics and docs) also document 422 (bad
  parameter or ``X-Request-Timeout``), 429 (rate limit or overload, with ``Retry-After``), 503
  (Triton unavailable, with ``Retry-After``) and 504 (deadline), and the ``X-Request-Timeout``
  header they accept; 404 (each resolves a model: a named one may not exist, a task may have
  none); those with a request body 400 (malformed body);
* with API keys configured, the bearer and X-API-Key schemes and 401 (none declared otherwise:
  the schema says exactly when a key is required);
* every response documents the ``X-Request-ID`` header;
* the KServe v2 door (paths under ``/v2``) answers KServe's ``{"error": "<message>"}``
  (``KServeError``) and 400 where the others say 422 (``errors.kserve_error``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.gateway.admission import MIN_REQUEST_TIMEOUT_S
from serving.gateway.errors import is_kserve
from serving.gateway.guard import EXEMPT_PATHS
from serving.gateway.settings import Settings

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable reason, e.g. payload_too_large"},
                "message": {"type": "string", "description": "what was wrong, for a person"},
                "details": {"description": "optional structured details (e.g. validation errors)"},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
KSERVE_ERROR_SCHEMA: dict[str, Any] = {
    "title": "KServeError",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong, for a person"}},
}
_KSERVE_ERROR_REF = {"$ref": "#/components/schemas/KServeError"}
_REQUEST_ID = {
    "description": "the request id: the client's X-Request-ID, or one the gateway made",
    "schema": {"type": "string"},
}
_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
_GUARDED = {
    "422": "invalid parameter, body or X-Request-Timeout",
    "429": "rate limit exceeded, or the gateway is at max_in_flight",
    "503": "the inference server is unavailable",
    "504": "the request's deadline passed",
}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def patch_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorBody"] = ERROR_SCHEMA
    schemas["KServeError"] = KSERVE_ERROR_SCHEMA
    auth = bool(settings.api_keys.get_secret_value().strip() or settings.api_keys_file)
    if auth:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            kserve = is_kserve(path)
            if kserve and "422" in responses:  # FastAPI's own parameter-validation entry: a 400 here
                responses.setdefault("400", responses.pop("422"))
            if path not in EXEMPT_PATHS:
                params = op.setdefault("parameters", [])
                for status, text in _GUARDED.items():
                    responses.setdefault(
                        "400" if kserve and status == "422" else status, {"description": text}
                    )
                # Every guarded route resolves a model: a named one may not exist, a task may have none.
                responses.setdefault("404", {"description": "no such model, or none serves this task"})
                if "requestBody" in op:
                    responses.setdefault("400", {"description": "malformed request body"})
                if not any(p.get("name", "").lower() == "x-request-timeout" for p in params):
                    params.append(
                        {
                            "name": "X-Request-Timeout",
                            "in": "header",
                            "required": False,
                            "description": f"deadline in seconds (>= {MIN_REQUEST_TIMEOUT_S}; larger than "
                            f"{settings.max_request_timeout_s:g} is capped); default "
                            f"{settings.triton_timeout_s:g}",
                            "schema": {"type": "number", "minimum": MIN_REQUEST_TIMEOUT_S},
                        }
                    )
                if auth:
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                    responses.setdefault("401", {"description": "API key missing or invalid"})
            for status, resp in responses.items():
                headers = resp.setdefault("headers", {})
                headers["X-Request-ID"] = _REQUEST_ID
                if status[0] in "45":
                    ref = _KSERVE_ERROR_REF if kserve else _ERROR_REF
                    resp["content"] = {"application/json": {"schema": ref}}
                if status in ("429", "503"):
                    headers["Retry-After"] = _RETRY_AFTER
                if status == "401":
                    headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = patch_schema(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
