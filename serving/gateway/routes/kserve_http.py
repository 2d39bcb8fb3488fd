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

from typing import Any

import grpc
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from tritonclient.grpc import service_pb2 as pb

from serving.gateway import codecs, context, errors, kserve, versions
from serving.gateway.deps import get_triton, request_id, time_left
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import Settings
from serving.gateway.triton import TritonClient, map_rpc_error

router = APIRouter(tags=["kserve-v2"])

ModelName = Path(description="served model name", max_length=256)
Version = Path(pattern=r"^[1-9][0-9]{0,8}$", description="model version")

INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "description": "KServe v2 inference request"}},
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


async def _unary(request: Request, triton: TritonClient, method: str, message: Any, model: str = "") -> Any:
    try:
        return await getattr(triton.stub, method)(message, timeout=time_left(request))
    except grpc.aio.AioRpcError as exc:
        raise map_rpc_error(exc, model) from None


@router.get("/v2", summary="Server metadata (KServe v2)")
async def server_metadata(request: Request, triton: TritonClient = Depends(get_triton)) -> dict[str, Any]:
    resp = await _unary(request, triton, "ServerMetadata", pb.ServerMetadataRequest())
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


# Each operation has a latest-version and a pinned-version path; thin endpoints share one body.
_NOT_READY: dict[int | str, dict[str, Any]] = {400: {"description": "not ready, or no such model or version"}}
_NO_MODEL: dict[int | str, dict[str, Any]] = {404: {"description": "no such model or version"}}


# Statistics (Triton keeps them for loaded models only). Declared before ``/v2/models/{name}``, so
# "stats" is not taken for a model name.

_STATS_RESPONSES: dict[int | str, dict[str, Any]] = {400: {"description": "no such model or version"}}


async def _stats(request: Request, triton: TritonClient, name: str, version: str) -> dict[str, Any]:
    context.of(request).model = name
    resp = await _unary(
        request, triton, "ModelStatistics", pb.ModelStatisticsRequest(name=name, version=version), name
    )
    return kserve.message_to_json(resp)


@router.get("/v2/models/stats", summary="Statistics of every served model (Triton extension)")
async def all_statistics(request: Request, triton: TritonClient = Depends(get_triton)) -> dict[str, Any]:
    return await _stats(request, triton, "", "")


@router.get(
    "/v2/models/{name}/stats", summary="Model statistics (Triton extension)", responses=_STATS_RESPONSES
)
async def model_statistics(
    request: Request, name: str = ModelName, triton: TritonClient = Depends(get_triton)
) -> dict[str, Any]:
    return await _stats(request, triton, name, "")


@router.get(
    "/v2/models/{name}/versions/{version}/stats",
    summary="Model version statistics (Triton extension)",
    responses=_STATS_RESPONSES,
)
async def model_version_statistics(
    request: Request,
    name: str = ModelName,
    version: str = Version,
    triton: TritonClient = Depends(get_triton),
) -> dict[str, Any]:
    return await _stats(request, triton, name, version)


async def _metadata(request: Request, triton: TritonClient, name: str, version: str) -> dict[str, Any]:
    context.of(request).model = name
    resp = await _unary(
        request, triton, "ModelMetadata", pb.ModelMetadataRequest(name=name, version=version), name
    )
    return kserve.model_metadata(resp)


@router.get("/v2/models/{name}", summary="Model metadata (KServe v2)", responses=_NO_MODEL)
async def model_metadata(
    request: Request, name: str = ModelName, triton: TritonClient = Depends(get_triton)
) -> dict[str, Any]:
    return await _metadata(request, triton, name, "")


@router.get(
    "/v2/models/{name}/versions/{version}", summary="Model version metadata (KServe v2)", responses=_NO_MODEL
)
async def model_version_metadata(
    request: Request,
    name: str = ModelName,
    version: str = Version,
    triton: TritonClient = Depends(get_triton),
) -> dict[str, Any]:
    return await _metadata(request, triton, name, version)


async def _ready(request: Request, triton: TritonClient, name: str, version: str) -> dict[str, Any]:
    context.of(request).model = name
    if await triton.model_ready(name, version, timeout=2.0):
        return {"name": name, "version": version, "ready": True}
    what = f"model {name!r}" + (f" version {version}" if version else "")
    raise errors.bad_request("model_not_ready", f"{what} is not ready (or not served)")  # Triton: 400


@router.get("/v2/models/{name}/ready", summary="Model readiness (KServe v2)", responses=_NOT_READY)
async def model_ready(
    request: Request, name: str = ModelName, triton: TritonClient = Depends(get_triton)
) -> dict[str, Any]:
    return await _ready(request, triton, name, "")


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model version readiness (KServe v2)",
    responses=_NOT_READY,
)
async def model_version_ready(
    request: Request,
    name: str = ModelName,
    version: str = Version,
    triton: TritonClient = Depends(get_triton),
) -> dict[str, Any]:
    return await _ready(request, triton, name, version)


async def _config(request: Request, triton: TritonClient, name: str, version: str) -> dict[str, Any]:
    context.of(request).model = name
    resp = await _unary(
        request, triton, "ModelConfig", pb.ModelConfigRequest(name=name, version=version), name
    )
    return kserve.message_to_json(resp.config)


@router.get("/v2/models/{name}/config", summary="Model configuration (Triton extension)", responses=_NO_MODEL)
async def model_config(
    request: Request, name: str = ModelName, triton: TritonClient = Depends(get_triton)
) -> dict[str, Any]:
    return await _config(request, triton, name, "")


@router.get(
    "/v2/models/{name}/versions/{version}/config",
    summary="Model version configuration (Triton extension)",
    responses=_NO_MODEL,
)
async def model_version_config(
    request: Request,
    name: str = ModelName,
    version: str = Version,
    triton: TritonClient = Depends(get_triton),
) -> dict[str, Any]:
    return await _config(request, triton, name, version)


async def _infer(request: Request, name: str, version: str) -> Response:
    context.of(request).model = name
    state = request.app.state
    triton: TritonClient = state.triton
    settings: Settings = state.settings
    headers = request.headers
    body = await codecs.read_body(request, settings)
    body = kserve.decompress(body, headers.get("content-encoding"), settings.max_upload_bytes)
    header, tail = kserve.split_body(body, headers.get("inference-header-content-length"))
    info = state.catalog.models.get(name)  # no await: an unknown model is Triton's 404 below
    if info is not None and info.decoupled:  # 501: what Triton's HTTP endpoint answers here
        raise errors.APIError(
            501,
            "decoupled_model",
            f"model {name!r} streams its responses (decoupled): use "
            "gRPC ModelStreamInfer (tritonclient.grpc start_stream) on "
            "the gateway's gRPC port, or its task route",
        )
    router_: versions.VersionRouter = state.versions
    chosen = router_.choose(name, info, version, headers.get)
    req, plan = kserve.build_request(
        header, tail, name, chosen, request_id(request), info, settings.max_tensor_elements
    )
    metrics: GatewayMetrics = state.metrics
    try:
        with metrics.triton_call(name):
            resp = await triton.stub.ModelInfer(req, timeout=time_left(request))
    except grpc.aio.AioRpcError as exc:
        raise map_rpc_error(exc, name) from None
    versions.served(request, name, resp.model_version)
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
    "/v2/models/{name}/infer",
    summary="Inference (KServe v2; JSON or binary tensors)",
    openapi_extra=INFER_BODY,
    response_class=Response,
    responses=_INFER_RESPONSES,
)
async def infer(request: Request, name: str = ModelName) -> Response:
    return await _infer(request, name, "")


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference on one model version (KServe v2)",
    openapi_extra=INFER_BODY,
    response_class=Response,
    responses=_INFER_RESPONSES,
)
async def infer_version(request: Request, name: str = ModelName, version: str = Version) -> Response:
    return await _infer(request, name, version)


@router.post(
    "/v2/repository/index",
    summary="Repository index (Triton extension; read-only, the served models)",
    response_model=list[dict[str, str]],
)
async def repository_index(
    request: Request, triton: TritonClient = Depends(get_triton)
) -> list[dict[str, str]]:
    # The body ({"ready": bool}) changes nothing: only READY models are listed either way.
    index = await _unary(request, triton, "RepositoryIndex", pb.RepositoryIndexRequest(ready=True))
    return [{"name": m.name, "version": m.version, "state": m.state} for m in kserve.visible_index(index)]


def not_here(what: str) -> JSONResponse:
    return errors.kserve_error(403, what)


@router.post("/v2/repository/{rest:path}", include_in_schema=False)
async def repository(rest: str) -> JSONResponse:
    # tritonclient's load_model/unload_model land here: say where model control lives instead of a bare 404.
    return not_here("model repository control is not public; operators use the admin API under /admin")
