"""FastAPI dependencies: the objects the lifespan owns, reached per request."""

from __future__ import annotations

import time

import numpy as np
from starlette.requests import HTTPConnection, Request

from serving.gateway.metrics import GatewayMetrics
from serving.gateway.triton import InferResult, ModelCatalog, ModelInfo, TritonClient


def get_triton(conn: HTTPConnection) -> TritonClient:
    return conn.app.state.triton


def get_catalog(conn: HTTPConnection) -> ModelCatalog:
    return conn.app.state.catalog


def get_metrics(conn: HTTPConnection) -> GatewayMetrics:
    return conn.app.state.metrics


async def infer(request: Request, model: ModelInfo, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
                version: str = "") -> InferResult:
    """One Triton call, labelled for metrics and tagged with the request id."""
    request.state.model = model.name
    client: TritonClient = request.app.state.triton
    metrics: GatewayMetrics = request.app.state.metrics
    start = time.perf_counter()
    try:
        return await client.infer(model.name, inputs, outputs, version=version,
                                  request_id=request.headers.get("x-request-id", ""))
    finally:
        metrics.triton.labels(model.name).observe(time.perf_counter() - start)
