"""The one inference path: every door (task routes via ``deps.infer``, KServe HTTP, the gRPC door)
runs its Triton calls through :class:`InferenceService`.

What it owns, the same for every door:

- **version choice**: a pin, else the version that already served this request (tiles of one
  image), else the model's traffic split (versions.py); the version that answered is recorded in
  the request context (``X-Model-Version`` / ``model_version``);
- **coalescing** of concurrent task-route requests to a batched model (coalesce.py);
- **deadlines**: the request context's deadline (``X-Request-Timeout`` or the gRPC deadline,
  capped) becomes the Triton call's timeout; 504 once it has passed;
- **cancellation**: a cancelled request (client gone) cancels its Triton call, which Triton sees;
- **timing**: ``gateway_triton_duration_seconds`` per call;
- **errors**: a failed call is a :class:`~serving.gateway.triton.TritonError`; the HTTP doors
  answer it in their form (errors.py), the gRPC door with :func:`grpc_status`.

Triton itself is behind :class:`~serving.gateway.triton.TritonClient`, the only code that talks
to it; a fake with the same methods makes the routes testable in-process (tests/unit).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from serving.gateway import errors
from serving.gateway.coalesce import Coalescer
from serving.gateway.context import RequestContext
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import Settings
from serving.gateway.triton import InferResult, ModelCatalog, ModelInfo, TritonClient, TritonError
from serving.gateway.versions import VersionRouter

Header = Callable[[str], str | None]

_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status: int) -> grpc.StatusCode:
    return _TO_GRPC.get(
        status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT
    )


def grpc_status(exc: errors.APIError) -> tuple[grpc.StatusCode, str]:
    """The gRPC door's form of a failure: Triton's own code and message for a failed Triton call
    (what a client of Triton direct would read), else the code of the gateway's HTTP status."""
    if isinstance(exc, TritonError):
        return exc.rpc_code, exc.rpc_details
    return grpc_code(exc.status), exc.message


class InferenceService:
    """Version choice, coalescing, deadlines, timing and error forms around the Triton client."""

    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        triton: TritonClient,
        catalog: ModelCatalog,
        router: VersionRouter,
        coalescer: Coalescer,
    ) -> None:
        self.settings, self.metrics = settings, metrics
        self.triton, self.catalog, self.router, self.coalescer = triton, catalog, router, coalescer

    # -- context -------------------------------------------------------------------------------

    def context(self, time_remaining: float | None, request_id: str = "") -> RequestContext:
        """A context for a call that did not come through the HTTP guard (the gRPC door): the
        client's deadline, capped like ``X-Request-Timeout``."""
        ctx = RequestContext(request_id)
        if time_remaining is not None:
            ctx.deadline = time.monotonic() + min(time_remaining, self.settings.max_request_timeout_s)
        return ctx

    def timeout(self, ctx: RequestContext) -> float:
        """The Triton call's timeout: what is left of the request's deadline (504 once passed)."""
        return ctx.time_left(self.settings.triton_timeout_s)

    # -- versions ------------------------------------------------------------------------------

    def version(self, ctx: RequestContext, name: str, pinned: str | None, header: Header) -> str:
        """The version to ask Triton for (``""``: Triton's newest READY one)."""
        if earlier := ctx.served.get(name):
            return earlier  # every call of one request uses the version that served the first
        return self.router.choose(name, self.catalog.models.get(name), pinned, header)

    @staticmethod
    def served(ctx: RequestContext, model: str, version: str) -> None:
        """Record the version that answered: for X-Model-Version and the request's later calls."""
        ctx.served[model] = ctx.model_version = version

    # -- calls ---------------------------------------------------------------------------------

    async def infer(
        self,
        ctx: RequestContext,
        model: ModelInfo,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None,
        version: str,
    ) -> InferResult:
        """One task-route inference, merged with concurrent ones to the same batched model."""
        ctx.model = model.name
        settings = self.settings

        async def call(feeds: dict[str, np.ndarray], timeout: float, rid: str) -> InferResult:
            with self.metrics.triton_call(model.name):
                return await self.triton.infer(
                    model.name, feeds, outputs, version=version, timeout=timeout, request_id=rid
                )

        if not settings.coalesce or model.max_batch_size <= 0 or model.decoupled:
            result = await call(inputs, self.timeout(ctx), ctx.request_id)
        else:
            result = await self.coalescer.submit(
                Coalescer.key(model.name, version, inputs, outputs),
                inputs,
                call,
                max_rows=model.preferred_batch or model.max_batch_size,
                max_calls=settings.coalesce_max_calls or 2 * model.instances,
                timeout=self.timeout(ctx),
                request_id=ctx.request_id,
            )
        # Triton names the version; else the one asked for; else the catalogue's newest.
        self.served(ctx, model.name, result.model_version or version or model.version)
        return result

    async def infer_request(self, ctx: RequestContext, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """A KServe request built by a door (kserve.py, the gRPC door), Triton's answer unparsed."""
        ctx.model = req.model_name
        with self.metrics.triton_call(req.model_name):
            resp = await self.triton.infer_request(req, self.timeout(ctx))
        self.served(ctx, req.model_name, resp.model_version)
        return resp

    def stream_text(self, ctx: RequestContext, req: pb.ModelInferRequest) -> AsyncIterator[InferResult]:
        """One request to a decoupled model (text generation): each response until the final one."""
        ctx.model = req.model_name
        return self.triton.stream_infer(req, timeout=self.timeout(ctx))

    def stream(
        self, requests: AsyncIterator[pb.ModelInferRequest], timeout: float | None, model: str = ""
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """The gRPC door's bidirectional stream, forwarded message by message."""
        return self.triton.stream(requests, timeout, model)
