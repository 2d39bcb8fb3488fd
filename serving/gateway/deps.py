"""FastAPI dependencies: the objects the lifespan owns, reached per request, and the task routes'
door to the inference service (:func:`infer`)."""

from __future__ import annotations

import numpy as np
from starlette.requests import HTTPConnection, Request

from serving.gateway import context, errors, versions
from serving.gateway.inference import InferenceService
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.triton import InferResult, ModelCatalog, ModelInfo, TritonClient


# The getters are ``async``: FastAPI runs plain ``def`` dependencies in a threadpool (a hop per request).
async def get_triton(conn: HTTPConnection) -> TritonClient:
    return conn.app.state.triton


async def get_catalog(conn: HTTPConnection) -> ModelCatalog:
    return conn.app.state.catalog


async def get_metrics(conn: HTTPConnection) -> GatewayMetrics:
    return conn.app.state.metrics


async def get_inference(conn: HTTPConnection) -> InferenceService:
    return conn.app.state.inference


def request_id(conn: HTTPConnection) -> str:
    """The request id the guard middleware settled on (the client's X-Request-ID or a new one)."""
    return context.of(conn).request_id


def time_left(conn: HTTPConnection) -> float:
    """Seconds to the request's deadline (X-Request-Timeout, capped; else triton_timeout_s): the gRPC
    timeout for Triton. 504 once it has passed, so no call is started that cannot finish."""
    return context.of(conn).time_left(conn.app.state.settings.triton_timeout_s)


def version_for(request: Request, info: ModelInfo) -> str:
    """The version for a task-route request (``?version=`` pins it); raises 422 on a malformed pin."""
    pinned = request.query_params.get("version")
    if pinned is not None and not versions.valid(pinned):
        raise errors.unprocessable("invalid_parameter", f"version={pinned!r} is not a positive integer")
    service: InferenceService = request.app.state.inference
    return service.version(context.of(request), info.name, pinned, request.headers.get)


async def infer(
    request: Request,
    model: ModelInfo,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    version: str = "",
) -> InferResult:
    """One inference for a task route, through the inference service (coalesced where it can be).

    The version is ``version``, else ``?version=``, else the model's traffic split; the one that
    served goes out as ``X-Model-Version``.
    """
    service: InferenceService = request.app.state.inference
    ctx = context.of(request)
    return await service.infer(ctx, model, inputs, outputs, version or version_for(request, model))
