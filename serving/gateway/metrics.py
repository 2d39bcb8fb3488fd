"""Prometheus metrics for the gateway and the pure-ASGI middleware that records them.

A plain ASGI middleware (not BaseHTTPMiddleware) keeps the per-request cost to a few
microseconds and leaves streaming responses untouched. The ``route`` label is the route's
path template, never the raw URL, so label cardinality stays bounded.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by route, model and status code",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "HTTP request latency, first byte in to last byte out",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight", "HTTP requests being served", ["route"], registry=self.registry
        )
        self.triton = Histogram(
            "gateway_triton_duration_seconds",
            "Round trip gateway -> Triton -> gateway per call",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.triton_batch = Histogram(
            "gateway_triton_batch_rows",
            "Rows per Triton call the gateway sent for merged requests (serving/gateway/coalesce.py)",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.rejected = Counter(
            "gateway_rejected",
            "Requests refused before inference, by reason",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_SKIP = {"/metrics", "/healthz", "/readyz"}


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _SKIP:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        raw_path = scope["path"]
        gauge = self.metrics.in_flight.labels(_coarse(raw_path))
        gauge.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            gauge.dec()
            route = scope.get("route")
            route_label = getattr(route, "path", None) or "unmatched"
            state: dict[str, Any] = scope.get("state") or {}
            model = str(state.get("model", ""))
            if state.get("client_closed"):  # cancelled on client disconnect (guard.py): no response was sent
                status = 499
            self.metrics.requests.labels(route_label, model, str(status)).inc()
            self.metrics.latency.labels(route_label, model).observe(time.perf_counter() - start)


def _coarse(path: str) -> str:
    """In-flight label before routing: the first two path segments (bounded cardinality)."""
    parts = path.split("/")
    return "/".join(parts[:3]) if len(parts) > 2 else path
