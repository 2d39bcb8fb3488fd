"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from serving.gateway.deps import get_catalog, get_metrics, get_triton
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, TritonClient

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the gateway process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Triton and every discovered model are ready",
    responses={503: {"description": "not ready"}},
)
async def readyz(
    request: Request,
    triton: TritonClient = Depends(get_triton),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> JSONResponse:
    cached = getattr(request.app.state, "ready_cache", None)
    now = time.monotonic()
    if cached and now - cached[0] < settings.ready_cache_s:
        body, status = cached[1], cached[2]
    else:
        server = await triton.server_ready(timeout=2.0)
        models: dict[str, bool] = {}
        if server:
            if not catalog.models:
                await catalog.refresh()
            names = sorted(catalog.models)
            states = await asyncio.gather(*(triton.model_ready(n, timeout=2.0) for n in names))
            models = dict(zip(names, states, strict=True))
        ready = server and bool(models) and all(models.values())
        body = {"ready": ready, "triton": server, "models": models}
        status = 200 if ready else 503
        request.app.state.ready_cache = (now, body, status)
    headers = {} if status == 200 else {"Retry-After": "2"}
    return JSONResponse(body, status_code=status, headers=headers)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(m: GatewayMetrics = Depends(get_metrics)) -> Response:
    data, ctype = m.render()
    return Response(data, media_type=ctype)
