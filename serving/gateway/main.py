"""The gateway application: wiring only. Routers, settings, the Triton client and metrics meet here.

uvicorn --factory serving.gateway.main:create_app
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.gateway import grpc_front
from serving.gateway.coalesce import Coalescer
from serving.gateway.errors import install_error_handlers
from serving.gateway.guard import CORS_HEADERS, Guard, GuardMiddleware
from serving.gateway.inference import InferenceService
from serving.gateway.logs import configure_logging
from serving.gateway.metrics import GatewayMetrics, MetricsMiddleware
from serving.gateway.openapi import install_openapi
from serving.gateway.routes import (
    admin,
    anomaly,
    chat,
    classify,
    classify_text,
    denoise,
    embeddings,
    generate,
    health,
    kserve_http,
    models,
    playground,
    sample,
    segment,
    super_resolve,
    translate,
)
from serving.gateway.settings import Settings
from serving.gateway.triton import ModelCatalog, TritonClient
from serving.gateway.versions import VersionRouter

log = logging.getLogger("gateway")

ROUTERS = [
    health.router,
    models.router,
    classify.router,
    segment.router,
    super_resolve.router,
    anomaly.router,
    denoise.router,
    sample.router,
    generate.router,
    chat.router,
    translate.router,
    classify_text.router,
    embeddings.router,
]

# KServe v2 front door for existing Triton clients; the operators' API (left out of the public doc).
ROUTERS += [kserve_http.router, admin.router]
ROUTERS += [playground.router]  # GET /playground: the try-it page (static files, left out of the doc)


def create_app(settings: Settings | None = None, triton: TritonClient | None = None) -> FastAPI:
    """The app; ``triton`` replaces the client of ``settings.triton_grpc_url`` (a fake in tests)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The lifespan owns the Triton client: one channel per process, closed on shutdown.
        client = triton or TritonClient(settings.triton_grpc_url, settings.triton_timeout_s)
        catalog = ModelCatalog(client, discovery_timeout_s=settings.discovery_timeout_s)
        app.state.triton, app.state.catalog = client, catalog
        app.state.inference = InferenceService(
            settings, metrics, client, catalog, app.state.versions, app.state.coalescer
        )
        await catalog.refresh()  # best effort: Triton may still be starting; the loop keeps trying
        catalog.start()
        log.info("gateway ready: triton=%s models=%s", settings.triton_grpc_url, sorted(catalog.models))
        # The gRPC front door runs in this process and event loop: it shares the Triton channel,
        # the guard, the metrics and the traffic splits with the HTTP routes.
        grpc_server = None
        if settings.grpc_port is not None:
            grpc_server, app.state.grpc_port = await grpc_front.start(app.state.inference, app.state.guard)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_front.stop(grpc_server, settings.graceful_shutdown_s)
            await catalog.stop()
            await client.close()

    app = FastAPI(
        title="Model gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="One front door to the models served by Triton: task routes, metrics, health.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.versions = VersionRouter()  # traffic splits, set through /admin
    app.state.coalescer = Coalescer(lambda model, rows: metrics.triton_batch.labels(model).observe(rows))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app, settings)  # error bodies, 429/503 + Retry-After, auth: as really answered
    # Middleware, innermost first: guard (request context and id, X-Model-Version, deadline, auth,
    # rate limit, max in flight, disconnect -> cancel, errors), CORS only when configured (outside,
    # so preflights need no key), metrics.
    guard = Guard(settings, metrics)
    app.state.guard = guard  # the gRPC front door calls guard.authorize / guard.admission
    app.add_middleware(GuardMiddleware, guard=guard)
    if settings.cors_origins.strip():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST"],
            allow_headers=CORS_HEADERS,
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
