"""The gateway application: wiring only. Routers, settings, the Triton client and metrics meet here.

    uvicorn --factory serving.gateway.main:create_app
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving.gateway.errors import install_error_handlers
from serving.gateway.metrics import GatewayMetrics, MetricsMiddleware
from serving.gateway.routes import classify, health, models
from serving.gateway.settings import Settings
from serving.gateway.triton import ModelCatalog, TritonClient

log = logging.getLogger("gateway")

ROUTERS = [health.router, models.router, classify.router]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The lifespan owns the Triton client: one channel per process, closed on shutdown.
        triton = TritonClient(settings.triton_grpc_url, settings.triton_timeout_s)
        catalog = ModelCatalog(triton, discovery_timeout_s=settings.discovery_timeout_s)
        app.state.triton, app.state.catalog = triton, catalog
        await catalog.refresh()  # best effort: Triton may still be starting; the loop keeps trying
        catalog.start()
        log.info("gateway ready: triton=%s models=%s", settings.triton_grpc_url, sorted(catalog.models))
        try:
            yield
        finally:
            await catalog.stop()
            await triton.close()

    app = FastAPI(title="Model gateway", version="0.1.0", lifespan=lifespan,
                  description="One front door to the models served by Triton: task routes, metrics, health.")
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
