"""KServe v2 / Open Inference Protocol over HTTP: the front door for existing Triton and KServe clients.

``tritonclient.http.InferenceServerClient("gateway:8080")`` works unchanged: health, server and
model metadata, model config, inference with JSON or binary tensors, the classification
extension, statistics and the repository index (read-only, the served models only). Requests go
to Triton over gRPC (see ``kserve.py`` for why), pass the gateway's guard (API keys, rate limits,
max in flight, deadline) like every route, are validated like the task routes, and follow the
model's traffic split when the path names no version. Inference answers carry ``X-Model-Version``.
Errors are KServe's ``{"error": "<message>"}`` with Triton's status codes (``errors.kserve_error``;
checked against Triton itself by tests/e2e/test_kserve_conformance.py). Repository load/unload and
shared memory are not reachable here (403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse

from serving.gateway import codecs, context, errors, kserve, validation
from serving.gateway.deps import get_inference, get_triton, time_left
from serving.gateway.inference import InferenceService
from serving.gateway.triton import TritonClient

router = APIRouter(tags=["kserve-v2"])

ModelName = Path(description="served model name", max_length=256)
Version = Path(pattern=r"^[1-9][0-9]{0,8}$", description="model version")

# The request as kserve.build_request checks it; whether the tensors fit the model is the model's
# metadata (GET /v2/models/{name}), which a JSON Schema per path cannot state.
_PARAMETERS = {"type": "object", "additionalProperties": {"type": ["boolean", "number", "string"]}}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": [*validation.KSERVE_NUMPY, "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"description": "row-major values, flat or nested"},
        "parameters": _PARAMETERS,
    },
}
INFER_REQUEST = {
    "type": "object",
    "description": "KServe v2 inference request",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
        "parameters": _PARAMETERS,
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": INFER_REQUEST},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "JSON header + binary tensors (binary tensor extension; "
                    "header Inference-Header-Content-Length)",
                }
            },
        },
    }
}


@router.get("/v2", summary="Server metadata (KServe v2)")
async def server_metadata(request: Request, triton: TritonClient = Depends(get_triton)) -> dict[str, Any]:
    resp = await triton.server_metadata(time_left(request))
    return {
        "name": resp.name,
        "version": resp.version,
        "extensions": [e for e in resp.extensions if e in kserve.EXTENSIONS],
    }


# Health and readiness: clients read the status code only (200 = true); the body says it too.
# A server that is not ready is a 503 with Retry-After, as /readyz; a model that is not ready is a
# 400 (KServe: "a 4xx status indicates false"), Triton's own answer.


@router.get("/v2/health/live", summary="Liveness (KServe v2): the gateway answers")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    summary="Readiness (KServe v2): Triton is ready",
    responses={503: {"description": "not ready"}},
)
async def ready(triton: TritonClient = Depends(get_triton)) -> dict[str, bool]:
    if await triton.server_ready(timeout=2.0):
        return {"ready": True}
    raise errors.upstream_unavailable("the inference server is not ready")


@router.get("/v2/models/stats", summary="Statistics of every served model (Triton extension)")
async def all_statistics(request: Request, triton: TritonClient = Depends(get_triton)) -> dict[str, Any]:
    return kserve.message_to_json(await triton.model_statistics(timeout=time_left(request)))


# Per-model operations, each on a latest-version and a pinned-version path (``_per_version``).


async def _stats(request: Request, name: str, version: str) -> dict[str, Any]:
    triton: TritonClient = request.app.state.triton
    return kserve.message_to_json(await triton.model_statistics(name, version, time_left(request)))


async def _metadata(request: Request, name: str, version: str) -> dict[str, Any]:
    triton: TritonClient = request.app.state.triton
    return kserve.model_metadata(await triton.model_metadata(name, version, time_left(request)))


async def _ready(request: Request, name: str, version: str) -> dict[str, Any]:
    triton: TritonClient = request.app.state.triton
    if await triton.model_ready(name, version, timeout=2.0):
        return {"name": name, "version": version, "ready": True}
    what = f"model {name!r}" + (f" version {version}" if version else "")
    raise errors.bad_request("model_not_ready", f"{what} is not ready (or not served)")  # Triton: 400


async def _config(request: Request, name: str, version: str) -> dict[str, Any]:
    triton: TritonClient = request.app.state.triton
    return kserve.message_to_json(await triton.model_config(name, version, time_left(request)))


async def _infer(request: Request, name: str, version: str) -> Response:
    service: InferenceService = await get_inference(request)
    settings = service.settings
    headers = request.headers
    body = await codecs.read_body(request, settings)
    body = kserve.decompress(body, headers.get("content-encoding"), settings.max_upload_bytes)
    header, tail = kserve.split_body(body, headers.get("inference-header-content-length"))
    info = service.catalog.models.get(name)  # no await: an unknown model is Triton's 404 below
    if info is not None and info.decoupled:  # 501: what Triton's HTTP endpoint answers here
        raise errors.APIError(
            501,
            "decoupled_model",
            f"model {name!r} streams its responses (decoupled): use "
            "gRPC ModelStreamInfer (tritonclient.grpc start_stream) on "
            "the gateway's gRPC port, or its task route",
        )
    ctx = context.of(request)
    chosen = service.version(ctx, name, version, headers.get)
    req, plan = kserve.build_request(
        header, tail, name, chosen, ctx.request_id, info, settings.max_tensor_elements
    )
    resp = await service.infer_request(ctx, req)
    payload, header_length = kserve.encode_response(resp, plan)
    payload, encoding = kserve.compress(payload, headers.get("accept-encoding"))
    out_headers = {"X-Model-Version": resp.model_version}
    if encoding:
        out_headers["Content-Encoding"] = encoding
    if header_length is None:
        return Response(payload, media_type="application/json", headers=out_headers)
    out_headers["Inference-Header-Content-Length"] = str(header_length)
    return Response(payload, media_type="application/octet-stream", headers=out_headers)


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}, "application/octet-stream": {}},
        "headers": {
            "X-Model-Version": {"description": "the version that served", "schema": {"type": "string"}}
        },
    },
    400: {"description": "malformed body, or a tensor the model does not take"},
    404: {"description": "no such model or version"},
    413: {"description": "too large"},
    501: {"description": "a decoupled model: it streams over gRPC ModelStreamInfer"},
}


@router.post(
    "/v2/repository/index",
    summary="Repository index (Triton extension; read-only, the served models)",
    response_model=list[dict[str, str]],
)
async def repository_index(
    request: Request, triton: TritonClient = Depends(get_triton)
) -> list[dict[str, str]]:
    # The body ({"ready": bool}) changes nothing: only READY models are listed either way.
    index = await triton.repository_index(time_left(request), ready=True)
    return [{"name": m.name, "version": m.version, "state": m.state} for m in kserve.visible_index(index)]


def not_here(what: str) -> JSONResponse:
    return errors.kserve_error(403, what)


@router.post("/v2/repository/{rest:path}", include_in_schema=False)
async def repository(rest: str) -> JSONResponse:
    # tritonclient's load_model/unload_model land here: say where model control lives instead of a bare 404.
    return not_here("model repository control is not public; operators use the admin API under /admin")


_NOT_READY: dict[int | str, dict[str, Any]] = {400: {"description": "not ready, or no such model or version"}}
_NO_MODEL: dict[int | str, dict[str, Any]] = {404: {"description": "no such model or version"}}
_STATS_RESPONSES: dict[int | str, dict[str, Any]] = {400: {"description": "no such model or version"}}
Handler = Callable[[Request, str, str], Awaitable[Any]]


def _per_version(
    method: str, suffix: str, ops: tuple[str, str], summaries: tuple[str, str], handler: Handler, **route: Any
) -> None:
    """Register ``handler`` on ``/v2/models/{name}<suffix>`` and ``.../versions/{version}<suffix>``."""

    async def latest(request: Request, name: str = ModelName) -> Any:
        context.of(request).model = name
        return await handler(request, name, "")

    async def pinned(request: Request, name: str = ModelName, version: str = Version) -> Any:
        context.of(request).model = name
        return await handler(request, name, version)

    paths = (f"/v2/models/{{name}}{suffix}", f"/v2/models/{{name}}/versions/{{version}}{suffix}")
    endpoints: tuple[Callable[..., Awaitable[Any]], ...] = (latest, pinned)
    for path, endpoint, op, summary in zip(paths, endpoints, ops, summaries, strict=True):
        router.add_api_route(path, endpoint, methods=[method], name=op, summary=summary, **route)


# Declared after "/v2/models/stats", so "stats" is not taken for a model name.
_per_version(
    "GET",
    "/stats",
    ("model_statistics", "model_version_statistics"),
    ("Model statistics (Triton extension)", "Model version statistics (Triton extension)"),
    _stats,
    responses=_STATS_RESPONSES,
)
_per_version(
    "GET",
    "",
    ("model_metadata", "model_version_metadata"),
    ("Model metadata (KServe v2)", "Model version metadata (KServe v2)"),
    _metadata,
    responses=_NO_MODEL,
)
_per_version(
    "GET",
    "/ready",
    ("model_ready", "model_version_ready"),
    ("Model readiness (KServe v2)", "Model version readiness (KServe v2)"),
    _ready,
    responses=_NOT_READY,
)
_per_version(
    "GET",
    "/config",
    ("model_config", "model_version_config"),
    ("Model configuration (Triton extension)", "Model version configuration (Triton extension)"),
    _config,
    responses=_NO_MODEL,
)
_per_version(
    "POST",
    "/infer",
    ("infer", "infer_version"),
    ("Inference (KServe v2; JSON or binary tensors)", "Inference on one model version (KServe v2)"),
    _infer,
    openapi_extra=INFER_BODY,
    response_class=Response,
    responses=_INFER_RESPONSES,
)
