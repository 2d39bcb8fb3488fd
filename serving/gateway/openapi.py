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

Exact, so that the fuzzer's positive and negative checks both hold: what the document allows is
served, what it refuses is refused. The values come from the definitions that validate them:

* ``model`` parameters and body fields: the served models of the route's task (the route says which
  with :func:`task_extra`; ``""`` is the default model, as ``ModelCatalog.for_task`` treats it),
  and the ``{name}``/``{version}`` of the KServe paths: the served models and versions. Read from
  the catalog when the document is asked for, rebuilt when the served set changes;
* integer bounds as the pydantic models state them (FastAPI's OpenAPI model turns them into
  floats: 2**63 - 1 would read 2**63);
* the text patterns the routes state from the model (see ``translate.text_pattern``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from serving.gateway.admission import MIN_REQUEST_TIMEOUT_S
from serving.gateway.errors import is_kserve
from serving.gateway.guard import EXEMPT_PATHS
from serving.gateway.settings import Settings
from serving.gateway.triton import ModelInfo

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
                            # any finite number: larger ones are capped, not refused
                            "schema": {
                                "type": "number",
                                "minimum": MIN_REQUEST_TIMEOUT_S,
                                "maximum": sys.float_info.max,
                            },
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


TASK_KEY, MODEL_PARAM_KEY = "x-task", "x-model-parameter"
# A route's model-specific edits: (operation, its JSON body schema or None, the document's schemas,
# the served models of its task, settings) -> None.
SchemaRefiner = Callable[
    [dict[str, Any], dict[str, Any] | None, dict[str, Any], list[ModelInfo], Settings], None
]
REFINERS: dict[str, SchemaRefiner] = {}


def task_extra(task: str, param: str = "model", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``openapi_extra`` of a task route: its ``param`` (query or JSON field) names a ``task`` model."""
    return {**(extra or {}), TASK_KEY: task, MODEL_PARAM_KEY: param}


def _enum(schema: dict[str, Any], values: list[str]) -> None:
    """Restrict a string schema (or the string branch of ``anyOf: [string, null]``) to ``values``."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["enum"] = values
            branch.pop("pattern", None)


def _body_schema(op: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any] | None:
    ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    name = ref.get("$ref", "").rsplit("/", 1)[-1]
    return schemas.get(name)


def served_values(schema: dict[str, Any], models: Iterable[ModelInfo], settings: Settings) -> None:
    """Model enums per task, KServe names and versions, route refinements: from the served set."""
    served = sorted(models, key=lambda m: m.name)
    schemas = schema.get("components", {}).get("schemas", {})
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            task = op.pop(TASK_KEY, None)
            param = op.pop(MODEL_PARAM_KEY, "model")
            params = op.get("parameters", [])
            if not served:  # Triton not up (yet): any name may be asked for; 503/404 are documented
                continue
            if path.startswith("/v2/models/{name}"):
                for p in params:
                    if p.get("in") == "path" and p["name"] == "name":
                        # /infer of a decoupled model is refused (its answers stream over gRPC)
                        infer = path.endswith("/infer")
                        _enum(p["schema"], [m.name for m in served if not (infer and m.decoupled)])
                        p["schema"].pop("maxLength", None)
                    if p.get("in") == "path" and p["name"] == "version":
                        _enum(p["schema"], sorted({m.version for m in served}, key=int))
            if task is None:
                continue
            of_task = [m for m in served if m.task == task]
            names = ["", *(m.name for m in of_task)]  # "": the task's default model
            for p in params:
                if p.get("in") == "query" and p["name"] == param:
                    _enum(p["schema"], names)
            body = _body_schema(op, schemas)
            if body is not None and param in body.get("properties", {}):
                _enum(body["properties"][param], names)
            if body is not None and "version" in body.get("properties", {}):
                _enum(body["properties"]["version"], sorted({m.version for m in of_task}, key=int))
            if task in REFINERS:
                REFINERS[task](op, body, schemas, of_task, settings)


def exact_int_bounds(schema: dict[str, Any], routes: Iterable[Any]) -> None:
    """Put back the request models' integer bounds as pydantic states them (FastAPI made them floats)."""
    schemas = schema.get("components", {}).get("schemas", {})
    for route in routes:
        model = getattr(getattr(route, "body_field", None), "type_", None)
        if not (isinstance(route, APIRoute) and isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        exact = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in [(model.__name__, exact), *exact.get("$defs", {}).items()]:
            if name in schemas:
                _copy_bounds(schemas[name], sub)


def _copy_bounds(dst: Any, src: Any) -> None:
    if isinstance(dst, dict) and isinstance(src, dict):
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if key in dst and isinstance(src.get(key), int):
                dst[key] = src[key]
        for key in dst.keys() & src.keys():
            _copy_bounds(dst[key], src[key])
    elif isinstance(dst, list) and isinstance(src, list) and len(dst) == len(src):
        for d, s in zip(dst, src, strict=True):
            _copy_bounds(d, s)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    built_for: list[Any] = [None]  # the served set the cached document describes

    def openapi() -> dict[str, Any]:
        catalog = getattr(app.state, "catalog", None)
        models = list(catalog.models.values()) if catalog is not None else []
        served = sorted((m.name, m.task, m.version, repr(sorted(m.parameters.items()))) for m in models)
        if app.openapi_schema is None or built_for[0] != served:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            exact_int_bounds(schema, app.routes)
            served_values(schema, models, settings)
            app.openapi_schema, built_for[0] = patch_schema(schema, settings), served
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
