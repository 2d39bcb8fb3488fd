"""Prometheus metrics for the gateway and the pure-ASGI middleware that records them.

Both doors record a request the same way (:meth:`GatewayMetrics.request`: in flight, count by
status, latency) and time Triton calls the same way (:meth:`GatewayMetrics.triton_call`).
A plain ASGI middleware (not BaseHTTPMiddleware) keeps the per-request cost to a few
microseconds and leaves streaming responses untouched. The ``route`` label is the route's
path template (``grpc:<Method>`` on the gRPC door), never the raw URL, so label cardinality
stays bounded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.gateway import context

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class Outcome:
    """What a door learns while it serves a request: the labels it is recorded under."""

    route: str
    status: int
    model: str = ""


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

    @contextlib.contextmanager
    def request(self, in_flight: str, status: int) -> Iterator[Outcome]:
        """One request on a door: in flight under ``in_flight``, then counted and timed under the
        outcome's labels as the door set them (``status`` until it says otherwise)."""
        outcome = Outcome(in_flight, status)
        gauge = self.in_flight.labels(in_flight)
        gauge.inc()
        start = time.perf_counter()
        try:
            yield outcome
        finally:
            gauge.dec()
            self.requests.labels(outcome.route, outcome.model, str(outcome.status)).inc()
            self.latency.labels(outcome.route, outcome.model).observe(time.perf_counter() - start)

    @contextlib.contextmanager
    def triton_call(self, model: str) -> Iterator[None]:
        """Time one round trip to Triton (every door, every call)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.triton.labels(model).observe(time.perf_counter() - start)

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
        with self.metrics.request(_coarse(scope["path"]), 500) as outcome:

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    outcome.status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                outcome.route = getattr(scope.get("route"), "path", None) or "unmatched"
                ctx = context.find(scope)  # none where the guard did not run (a CORS preflight)
                if ctx is not None:
                    outcome.model = ctx.model
                    if ctx.client_closed:  # cancelled on client disconnect (guard.py): nothing was sent
                        outcome.status = 499


def _coarse(path: str) -> str:
    """In-flight label before routing: the first two path segments (bounded cardinality)."""
    parts = path.split("/")
    return "/".join(parts[:3]) if len(parts) > 2 else path
