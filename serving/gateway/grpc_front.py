"""KServe v2 gRPC front door: ``GRPCInferenceService`` on the gateway, forwarded to Triton.

``tritonclient.grpc.InferenceServerClient("gateway:8081")`` works unchanged, including the
bidirectional ``ModelStreamInfer`` stream that decoupled models (token streaming) answer on.

Why an asyncio server inside the gateway process (started by its lifespan) rather than a sibling
process or a proxy (Envoy is not available here): it shares the process's one channel to Triton,
the guard (API keys, rate limits, max in flight), the metrics registry and the traffic splits the
admin API sets, so a canary or a key applies to HTTP and gRPC clients alike, with no IPC.

Per call, the same rules as HTTP: the key comes from metadata (``authorization: Bearer <key>`` or
``x-api-key``), :meth:`Guard.authorize` and :meth:`Guard.admission` decide, tensors pass the shared
validators, a request without ``model_version`` follows the model's traffic split, and metrics
are recorded with ``route="grpc:<Method>"``. Gateway refusals map to gRPC codes (401
UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED with ``retry-after`` trailing metadata, 422
INVALID_ARGUMENT, ...); Triton's own errors pass through with their code and message. The
``status`` label is the HTTP status the HTTP front door would have answered, so one error-rate
query covers both doors. Statistics and the repository index (read-only, the served models) are
forwarded; repository load/unload and shared memory are refused (PERMISSION_DENIED).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.gateway import errors, kserve, validation
from serving.gateway.auth import extract_key
from serving.gateway.guard import Guard
from serving.gateway.inference import InferenceService, grpc_status
from serving.gateway.metrics import Outcome
from serving.gateway.settings import Settings
from serving.gateway.triton import TritonError

log = logging.getLogger("gateway.grpc")

_END = object()
Metadata = Sequence[tuple[str, Any]]


def _peer_host(peer: str | None) -> str:
    """``ipv4:127.0.0.1:5678`` -> ``127.0.0.1`` (the rate-limit identity without keys)."""
    if not peer:
        return ""
    addr = peer.split(":", 1)[1] if ":" in peer else peer
    return addr.rsplit(":", 1)[0].strip("[]")


def _header_getter(metadata: Metadata) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        for key, value in metadata:
            if key == name:
                return value if isinstance(value, str) else None
        return None

    return get


class FrontDoor(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer: the guard's rules, then the inference service (which owns the Triton calls)."""

    def __init__(self, service: InferenceService, guard: Guard) -> None:
        self.service, self.guard = service, guard
        self.settings, self.metrics, self.triton = service.settings, service.metrics, service.triton

    # -- plumbing ------------------------------------------------------------------------------

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return self.service.timeout(self.service.context(context.time_remaining()))

    @contextlib.asynccontextmanager
    async def _served(
        self, context: grpc.aio.ServicerContext, method: str, model: str = ""
    ) -> AsyncIterator[Outcome]:
        """Metrics and error mapping around one call, unary or stream (the same helper as HTTP's)."""
        with self.metrics.request(f"grpc:{method}", 200) as outcome:
            outcome.model = model
            try:
                yield outcome
            except errors.APIError as exc:  # the gateway's refusal, or Triton's (passed through)
                outcome.status = exc.status
                retry = (exc.headers or {}).get("Retry-After")
                if retry and not isinstance(exc, TritonError):
                    context.set_trailing_metadata((("retry-after", retry),))
                await context.abort(*grpc_status(exc))
            except asyncio.CancelledError:
                outcome.status = 499
                raise

    async def _guarded(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        model: str,
        call: Callable[[Metadata], Awaitable[Any]],
    ) -> Any:
        """Auth, admission, metrics and error mapping around one unary call."""
        async with self._served(context, method, model) as outcome:
            metadata = tuple(context.invocation_metadata() or ())
            await self.guard.authorize(extract_key(metadata), outcome.route, _peer_host(context.peer()))
            async with self.guard.admission():
                return await call(metadata)

    def _check_inputs(self, req: pb.ModelInferRequest) -> None:
        """The shared tensor validators (element limit, byte sizes, NaN/inf) on raw inputs."""
        limit = self.settings.max_tensor_elements
        raw = req.raw_input_contents
        for i, t in enumerate(req.inputs):
            if i < len(raw):
                validation.tensor_from_raw(t.name, t.datatype, list(t.shape), raw[i], limit)
            else:
                validation.check_shape(t.name, list(t.shape), limit)

    def _route_version(self, req: pb.ModelInferRequest, metadata: Metadata) -> None:
        if not req.model_version:
            ctx = self.service.context(None)
            req.model_version = self.service.version(ctx, req.model_name, "", _header_getter(metadata))

    # -- health and metadata -------------------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)  # the gateway answers: it is live

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        # A probe: no key and no limits, as /v2/health/ready on HTTP (guard.EXEMPT_PATHS).
        return pb.ServerReadyResponse(ready=await self.triton.server_ready(timeout=2.0))

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def call(_: Metadata) -> pb.ModelReadyResponse:
            return pb.ModelReadyResponse(
                ready=await self.triton.model_ready(request.name, request.version, 2.0)
            )

        return await self._guarded(context, "ModelReady", request.name, call)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def call(_: Metadata) -> pb.ServerMetadataResponse:
            resp = await self.triton.server_metadata(self._timeout(context))
            keep = [e for e in resp.extensions if e in kserve.EXTENSIONS]
            del resp.extensions[:]
            resp.extensions.extend(keep)
            return resp

        return await self._guarded(context, "ServerMetadata", "", call)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def call(_: Metadata) -> pb.ModelMetadataResponse:
            return await self.triton.model_metadata(request.name, request.version, self._timeout(context))

        return await self._guarded(context, "ModelMetadata", request.name, call)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        async def call(_: Metadata) -> pb.ModelConfigResponse:
            cfg = await self.triton.model_config(request.name, request.version, self._timeout(context))
            return pb.ModelConfigResponse(config=cfg)

        return await self._guarded(context, "ModelConfig", request.name, call)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        async def call(_: Metadata) -> pb.ModelStatisticsResponse:
            return await self.triton.model_statistics(request.name, request.version, self._timeout(context))

        return await self._guarded(context, "ModelStatistics", request.name, call)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        """Read-only and limited to the served (READY) models: ``kserve.visible_index``."""

        async def call(_: Metadata) -> pb.RepositoryIndexResponse:
            index = await self.triton.repository_index(self._timeout(context), ready=True)
            return pb.RepositoryIndexResponse(models=kserve.visible_index(index))

        return await self._guarded(context, "RepositoryIndex", "", call)

    # -- inference -----------------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def call(metadata: Metadata) -> pb.ModelInferResponse:
            self._check_inputs(request)
            self._route_version(request, metadata)
            resp = await self.service.infer_request(self.service.context(context.time_remaining()), request)
            context.set_trailing_metadata((("x-model-version", resp.model_version),))
            return resp

        return await self._guarded(context, "ModelInfer", request.model_name, call)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Bidirectional stream, forwarded message by message.

        The stream is authorised (and holds one in-flight slot) when it opens; with rate limits,
        every further request on it is counted too. A request the gateway refuses gets an error
        response on the stream, as Triton does, and the stream goes on.
        """
        route = "grpc:ModelStreamInfer"
        metadata = tuple(context.invocation_metadata() or ())
        key, client = extract_key(metadata), _peer_host(context.peer())
        out: asyncio.Queue[Any] = asyncio.Queue()
        pump: asyncio.Task[None] | None = None
        async with self._served(context, "ModelStreamInfer") as outcome:
            principal = await self.guard.authorize(key, route, client)
            async with self.guard.admission():

                async def upstream() -> AsyncIterator[pb.ModelInferRequest]:
                    first = True
                    async for req in request_iterator:
                        outcome.model = outcome.model or req.model_name
                        try:
                            if not first and principal.limits:
                                await self.guard.authorize(key, route, client)
                            self._check_inputs(req)
                            self._route_version(req, metadata)
                        except errors.APIError as exc:
                            out.put_nowait(
                                pb.ModelStreamInferResponse(
                                    error_message=f"[{exc.code}] {exc.message}",
                                    infer_response=pb.ModelInferResponse(
                                        model_name=req.model_name, id=req.id
                                    ),
                                )
                            )
                            continue
                        finally:
                            first = False
                        yield req

                responses = self.service.stream(upstream(), context.time_remaining())

                async def forward() -> None:
                    try:
                        async for resp in responses:
                            out.put_nowait(resp)
                        out.put_nowait(_END)
                    except BaseException as exc:  # handed to the response loop, which re-raises it
                        out.put_nowait(exc)

                pump = asyncio.create_task(forward())
                try:
                    while True:
                        item = await out.get()
                        if item is _END:
                            break
                        if isinstance(item, BaseException):
                            raise item
                        yield item
                finally:
                    if not pump.done():
                        pump.cancel()  # which closes the stream to Triton (its call is cancelled)

    # -- not through the gateway ---------------------------------------------------------------

    async def _denied(self, context: grpc.aio.ServicerContext, what: str) -> None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, what)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._denied(
            context, "model repository control is not public; operators use the admin API (/admin)"
        )

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.RepositoryModelLoad(request, context)


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        # Refuse to share the port: with SO_REUSEPORT a second gateway (or a stale one) would
        # silently take half the connections.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ]


async def start(service: InferenceService, guard: Guard) -> tuple[grpc.aio.Server, int]:
    """Start the front door on ``settings.host:settings.grpc_port``; returns the server and its port."""
    settings = service.settings
    server = grpc.aio.server(options=server_options(settings))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FrontDoor(service, guard), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    log.info("gRPC front door on %s:%d", settings.host, port)
    return server, port


async def stop(server: grpc.aio.Server, grace_s: float) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await server.stop(grace_s)
