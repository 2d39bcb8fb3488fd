"""The guard: one pure-ASGI layer that every HTTP request passes, and the rules both doors apply.

:class:`Guard` is authentication (auth.py) plus admission (admission.py), shared by this
middleware and the gRPC front door (:meth:`Guard.authorize`, :meth:`Guard.admission`).

:class:`GuardMiddleware` (no BaseHTTPMiddleware: that costs a task and a queue per request and
buffers streaming bodies). Per request, in order:

1. **Request context** (context.py): the request id is ``X-Request-ID`` if it is sane, else a new
   uuid4; returned on every response, bound into the log context, sent to Triton as the request
   id. Answers that ran an inference also carry ``X-Model-Version`` (the version that served).
2. **Deadline** from ``X-Request-Timeout`` (admission.py), passed to Triton as the gRPC deadline.
3. **API key** (when keys are configured, auth.py).
4. **Rate limit** per key (per client address without keys).
5. **Load shedding**: at most ``max_in_flight`` requests per process.
6. **Client disconnect**: once the body is read, a watcher waits for ``http.disconnect``; if the
   client leaves before the response is complete the request's task is cancelled, which cancels
   the gRPC call to Triton (Triton sees the request as cancelled).
7. **Access log**: one structured line (route, status, latency, model, request id, key id).
8. **Errors**: a refusal here, or an unhandled exception anywhere below, is answered here in the
   door's error form (errors.py), so a 500 carries the request id too.

Health, metrics, docs and /admin (its own key) are exempt from 2-5: probes, scrapes and operators
must get through under overload.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.gateway import context, errors
from serving.gateway.admission import Admission
from serving.gateway.auth import AdminKey, ApiKeys, Principal, extract_key
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.routes.playground import is_playground
from serving.gateway.settings import Settings

EXEMPT_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "X-Request-Timeout"]
_STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client closed the request"


class Guard(Admission):
    """Authentication plus admission: what both doors ask before a call runs."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        super().__init__(settings, metrics)
        self.keys = ApiKeys.from_settings(settings)
        self.admin = AdminKey(settings)

    async def authorize(self, key: str | None, route: str, client: str = "") -> Principal:
        """Apply auth and the rate limit for one call; raise APIError 401/429, else who is calling.

        The gRPC front door calls this with the key from its metadata (``extract_key`` works on
        metadata pairs too) and maps 401 -> UNAUTHENTICATED, 429 -> RESOURCE_EXHAUSTED.
        """
        if route in EXEMPT_PATHS:
            return Principal("exempt", ())
        if self.keys.enabled:
            try:
                principal = self.keys.authenticate(key)
            except errors.APIError as exc:
                raise self.reject("unauthorized", exc) from None
        else:
            principal = Principal(f"anon:{client}", self.anon_limits)
        await self.rate_limit(principal)
        return principal


class GuardMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self.request_log = guard.settings.request_log
        self.log = structlog.get_logger("gateway.request").bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid_in = timeout_in = None
        auth_pairs: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid_in = value.decode("latin-1")
            elif name == b"x-request-timeout":
                timeout_in = value.decode("latin-1")
            elif name in (b"authorization", b"x-api-key"):
                auth_pairs.append((name.decode(), value.decode("latin-1")))
        rid = context.sane_request_id(rid_in)
        ctx = context.attach(scope, rid)
        structlog.contextvars.bind_contextvars(request_id=rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False
        principal: Principal | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = [*message.get("headers", ()), rid_header]
                if ctx.model_version and not any(k == b"x-model-version" for k, _ in headers):
                    headers.append((b"x-model-version", ctx.model_version.encode()))
                message["headers"] = headers
            await send(message)

        path = scope["path"]
        acquired = False
        try:
            # /admin has its own key and must work under overload (an operator rolling back);
            # the playground's static files carry no data (the page sends the key on its API calls).
            if path in EXEMPT_PATHS or path.startswith("/admin/") or is_playground(path):
                await self.app(scope, receive, send_wrapper)
                return
            ctx.deadline = self.guard.deadline(timeout_in)
            client = (scope.get("client") or ("", 0))[0]
            principal = await self.guard.authorize(extract_key(auth_pairs), path, client)
            if not self.guard.in_flight.try_acquire():
                raise self.guard.overloaded()
            acquired = True
            if await self._run_cancellable(scope, receive, send_wrapper):
                status = _STATUS_CLIENT_CLOSED
                ctx.client_closed = True  # the metrics middleware counts it as 499, not 500
        except errors.APIError as exc:
            if not started:
                if errors.is_kserve(path):  # KServe clients read KServe's error form (errors.py)
                    st, body = errors.kserve_body(exc.status, exc.message)
                    await _send_error(send_wrapper, st, body, exc.headers)
                else:
                    await _send_error(
                        send_wrapper, exc.status, errors.error_body(exc.code, exc.message), exc.headers
                    )
        except ClientDisconnect:
            status = _STATUS_CLIENT_CLOSED
            ctx.client_closed = True
        except Exception:
            # Answer here rather than in Starlette's ServerErrorMiddleware, so the 500 carries
            # the request id too; the traceback goes to the log with it.
            self.log.exception("unhandled error", route=_route(scope), request_id=rid)
            if not started:
                what = "unexpected error; see gateway logs (request id in X-Request-ID)"
                body = (
                    errors.kserve_body(500, what)[1]
                    if errors.is_kserve(path)
                    else errors.error_body("internal_error", what)
                )
                await _send_error(send_wrapper, 500, body, None)
            else:
                raise
        finally:
            if acquired:
                self.guard.in_flight.release()
            if self.request_log:
                self.log.info(
                    "request",
                    method=scope["method"],
                    route=_route(scope),
                    status=status,
                    latency_ms=round((time.perf_counter() - start) * 1000, 2),
                    model=ctx.model,
                    key_id=principal.id if principal and not principal.id.startswith("anon:") else None,
                )
            structlog.contextvars.unbind_contextvars("request_id")

    async def _run_cancellable(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Run the app; cancel it if the client disconnects first. True if it was cancelled."""
        body_done = False
        disconnected = asyncio.Event()
        complete = False
        cancelled_by_us = False
        watcher: asyncio.Task[None] | None = None
        app_task: asyncio.Future[None]

        async def watch() -> None:
            nonlocal cancelled_by_us
            # After the body, uvicorn's receive() returns only when the client is gone or the
            # response is complete.
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            if not complete and not app_task.done():
                cancelled_by_us = True
                app_task.cancel()

        async def wrapped_receive() -> Message:
            nonlocal body_done, watcher
            if body_done:  # the app polls for a disconnect (streaming responses): the watcher owns receive()
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
                watcher = asyncio.create_task(watch())
            elif message["type"] == "http.disconnect":
                disconnected.set()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        app_task = asyncio.ensure_future(self.app(scope, wrapped_receive, tracking_send))
        try:
            await app_task
        except asyncio.CancelledError:
            if not cancelled_by_us:
                raise
            return True
        finally:
            if watcher is not None:
                watcher.cancel()
        return False


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


async def _send_error(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None) -> None:
    raw = orjson.dumps(body)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})
