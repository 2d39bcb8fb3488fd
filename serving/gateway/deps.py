"""FastAPI dependencies: the objects the lifespan owns, reached per request."""

from __future__ import annotations

import numpy as np
from starlette.requests import HTTPConnection, Request

from serving.gateway import context, versions
from serving.gateway.coalesce import Coalescer
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.triton import InferResult, ModelCatalog, ModelInfo, TritonClient


# The getters are ``async``: FastAPI runs plain ``def`` dependencies in a threadpool (a hop per request).
async def get_triton(conn: HTTPConnection) -> TritonClient:
    return conn.app.state.triton


async def get_catalog(conn: HTTPConnection) -> ModelCatalog:
    return conn.app.state.catalog


async def get_metrics(conn: HTTPConnection) -> GatewayMetrics:
    return conn.app.state.metrics


def request_id(conn: HTTPConnection) -> str:
    """The request id the guard middleware settled on (the client's X-Request-ID or a new one)."""
    return context.of(conn).request_id


def time_left(conn: HTTPConnection) -> float:
    """Seconds to the request's deadline (X-Request-Timeout, capped; else triton_timeout_s): the gRPC
    timeout for Triton. 504 once it has passed, so no call is started that cannot finish."""
    return context.of(conn).time_left(conn.app.state.settings.triton_timeout_s)


async def infer(
    request: Request,
    model: ModelInfo,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    version: str = "",
) -> InferResult:
    """One Triton call, labelled for metrics and tagged with the request id.

    The version is ``version``, else ``?version=``, else the model's traffic split
    (``versions.for_request``); the one that served goes out as ``X-Model-Version`` (Triton names
    it; else the one asked for; else the catalogue's newest).
    """
    context.of(request).model = model.name
    version = version or versions.for_request(request, model)
    state = request.app.state
    client: TritonClient = state.triton
    metrics: GatewayMetrics = state.metrics
    settings = state.settings

    async def call(feeds: dict[str, np.ndarray], timeout: float, rid: str) -> InferResult:
        with metrics.triton_call(model.name):
            return await client.infer(
                model.name, feeds, outputs, version=version, timeout=timeout, request_id=rid
            )

    coalescer: Coalescer | None = getattr(state, "coalescer", None)
    if coalescer is None or not settings.coalesce or model.max_batch_size <= 0 or model.decoupled:
        result = await call(inputs, time_left(request), request_id(request))
    else:
        result = await coalescer.submit(
            Coalescer.key(model.name, version, inputs, outputs),
            inputs,
            call,
            max_rows=model.preferred_batch or model.max_batch_size,
            max_calls=settings.coalesce_max_calls or 2 * model.instances,
            timeout=time_left(request),
            request_id=request_id(request),
        )
    versions.served(request, model.name, result.model_version or version or model.version)
    return result
