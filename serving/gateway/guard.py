"""Admission control for every request: request id, deadline, API keys, rate limits, load shedding.

:class:`GuardMiddleware` is one pure-ASGI layer (no BaseHTTPMiddleware: that costs a task and a
queue per request and buffers streaming bodies). Per request, in order:

1. **Request id**: ``X-Request-ID`` if it is sane (<= 128 of ``[A-Za-z0-9._:-]``), else a new
   uuid4; returned on every response, bound into the log context, sent to Triton as the
   request id (``deps.infer``).
2. **Deadline**: ``X-Request-Timeout`` (seconds, >= 0.1; larger than ``max_request_timeout_s`` is
   capped), default ``triton_timeout_s``; stored as ``state["deadline"]`` (monotonic) and passed
   to Triton as the gRPC deadline.
3. **API key** (when keys are configured): ``Authorization: Bearer <key>`` or ``X-API-Key``;
   compared in constant time (``hmac.compare_digest`` of SHA-256 digests against *every* key).
4. **Rate limit** per key (per client address without keys): the ``limits`` library's moving
   window. Why not a hand-made token bucket: the moving window is exact (no double burst at a
   window edge), ``"20/second;600/minute"`` expresses a burst cap plus a sustained rate like a
   bucket would, Retry-After comes from the window's reset time, and
   ``GATEWAY_RATE_LIMIT_STORAGE=redis://...`` shares the limits across gateway replicas with no
   code change. Its cost is a few microseconds per request in memory.
5. **Load shedding**: at most ``max_in_flight`` requests per process; the next one gets 429 with
   Retry-After at once (a counter: no queue, no memory growth under a burst).
6. **Client disconnect**: once the body is read, a watcher waits for ``http.disconnect``; if the
   client leaves before the response is complete the request's task is cancelled, which cancels
   the gRPC call to Triton (Triton sees the request as cancelled).
7. **Access log**: one structured line (route, status, latency, model, request id, key id).

Health, metrics, docs and /admin (its own key) are exempt from 3-5: probes, scrapes and operators
must get through under overload.
The gRPC front door applies the same rules through :meth:`Guard.authorize` and
:meth:`Guard.admission`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.gateway import errors
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
MIN_REQUEST_TIMEOUT_S = 0.1  # shorter deadlines cannot cover one Triton round trip: refused (422)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_STATUS_CLIENT_CLOSED = 499  # nginx's convention for "client closed the request"


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str:
    return value if value and _REQUEST_ID.fullmatch(value) else new_request_id()


def extract_key(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The API key from ``Authorization: Bearer`` or ``X-API-Key`` (HTTP headers or gRPC metadata)."""
    for name, value in pairs:
        name = name.lower()
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    return None


def key_id(key: str) -> str:
    """What logs and limits see of a key: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key id (``anon:<address>`` without keys) and the rate limits that apply."""

    id: str
    limits: tuple[RateLimitItem, ...]


def _parse_limits(spec: str) -> tuple[RateLimitItem, ...]:
    spec = spec.strip()
    if not spec:
        return ()
    try:
        items = parse_many(spec)
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {spec!r} (e.g. '20/second;600/minute'): {exc}") from None
    return tuple(sorted(items, key=lambda i: i.get_expiry()))  # shortest window first


class ApiKeys:
    """Configured keys as SHA-256 digests; lookup compares against all of them in constant time."""

    def __init__(self, entries: dict[str, tuple[RateLimitItem, ...]]) -> None:
        self._digests = [(hashlib.sha256(k.encode()).digest(), key_id(k), lim) for k, lim in entries.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        default = _parse_limits(settings.rate_limit)
        entries: dict[str, tuple[RateLimitItem, ...]] = {}
        for key in settings.api_keys.get_secret_value().split(","):
            if key.strip():
                entries[key.strip()] = default
        if settings.api_keys_file:
            entries.update(read_keys_file(Path(settings.api_keys_file), default))
        return cls(entries)

    def lookup(self, presented: str | None) -> Principal | None:
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for stored, kid, lim in self._digests:  # no early exit: every key is compared
            if hmac.compare_digest(digest, stored):
                found = Principal(kid, lim)
        return found


def read_keys_file(path: Path, default: tuple[RateLimitItem, ...]) -> dict[str, tuple[RateLimitItem, ...]]:
    """Secrets file: one key per line, optionally followed by its own rate limit; ``#`` comments."""
    entries: dict[str, tuple[RateLimitItem, ...]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, rate = line.partition(" ")
        try:
            entries[key] = _parse_limits(rate) if rate.strip() else default
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from None
    return entries


class InFlightLimiter:
    """A counter, not a semaphore: over the limit we refuse at once instead of queueing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def try_acquire(self) -> bool:
        if self.current >= self.limit:
            return False
        self.current += 1
        return True

    def release(self) -> None:
        self.current -= 1


class Guard:
    """Auth, rate limits and load shedding, shared by the HTTP middleware and the gRPC front door."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = ApiKeys.from_settings(settings)
        self.anon_limits = _parse_limits(settings.rate_limit)
        storage = settings.rate_limit_storage
        self.limiter = MovingWindowRateLimiter(
            storage_from_string(storage if storage.startswith("async+") else f"async+{storage}")
        )
        self.in_flight = InFlightLimiter(settings.max_in_flight)

    def reject(self, reason: str, exc: errors.APIError) -> errors.APIError:
        self.metrics.rejected.labels(reason).inc()
        return exc

    async def authorize(self, key: str | None, route: str, client: str = "") -> Principal:
        """Apply auth and the rate limit for one call; raise APIError 401/429, else who is calling.

        The gRPC front door calls this with the key from its metadata (``extract_key`` works on
        metadata pairs too) and maps 401 -> UNAUTHENTICATED, 429 -> RESOURCE_EXHAUSTED.
        """
        if route in EXEMPT_PATHS:
            return Principal("exempt", ())
        if self.keys.enabled:
            principal = self.keys.lookup(key)
            if principal is None:
                what = "missing" if key is None else "invalid"
                raise self.reject(
                    "unauthorized",
                    errors.APIError(
                        401,
                        "unauthorized",
                        f"API key {what}: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                        headers={"WWW-Authenticate": "Bearer"},
                    ),
                )
        else:
            principal = Principal(f"anon:{client}", self.anon_limits)
        if principal.limits:
            retry = await self._retry_after(principal)
            if retry is not None:
                raise self.reject(
                    "rate_limited",
                    errors.APIError(
                        429,
                        "rate_limited",
                        f"rate limit exceeded; retry in {retry} s",
                        headers={"Retry-After": str(retry)},
                    ),
                )
        return principal

    async def _retry_after(self, p: Principal) -> int | None:
        """None if the call fits every limit (and is counted), else whole seconds to wait."""
        items = p.limits
        if len(items) > 1:  # test all first, so a refused call consumes none of the windows
            for item in items:
                if not await self.limiter.test(item, p.id):
                    return await self._reset_in(item, p.id)
        for item in items:
            if not await self.limiter.hit(item, p.id):
                return await self._reset_in(item, p.id)
        return None

    async def _reset_in(self, item: RateLimitItem, ident: str) -> int:
        stats = await self.limiter.get_window_stats(item, ident)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def overloaded(self) -> errors.APIError:
        return self.reject(
            "overloaded",
            errors.APIError(
                429,
                "overloaded",
                f"the gateway is at its limit of {self.in_flight.limit} requests in flight; retry shortly",
                headers={"Retry-After": "1"},
            ),
        )

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """One in-flight slot for the gRPC front door (raises the 429 APIError when full)."""
        if not self.in_flight.try_acquire():
            raise self.overloaded()
        try:
            yield
        finally:
            self.in_flight.release()

    def deadline(self, header: str | None) -> float:
        """Monotonic deadline from an ``X-Request-Timeout`` value (seconds) or the default."""
        if header is None:
            return time.monotonic() + self.settings.triton_timeout_s
        try:
            seconds = float(header)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < MIN_REQUEST_TIMEOUT_S:
            raise self.reject(
                "invalid_timeout",
                errors.unprocessable(
                    "invalid_parameter",
                    f"X-Request-Timeout must be a number of seconds >= {MIN_REQUEST_TIMEOUT_S}",
                ),
            )
        return time.monotonic() + min(seconds, self.settings.max_request_timeout_s)


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
        rid = sane_request_id(rid_in)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        structlog.contextvars.bind_contextvars(request_id=rid)
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started = False
        principal: Principal | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        path = scope["path"]
        acquired = False
        try:
            # /admin has its own key and must work under overload (an operator rolling back);
            # the playground's static files carry no data (the page sends the key on its API calls).
            if path in EXEMPT_PATHS or path.startswith("/admin/") or is_playground(path):
                await self.app(scope, receive, send_wrapper)
                return
            state["deadline"] = self.guard.deadline(timeout_in)
            client = (scope.get("client") or ("", 0))[0]
            principal = await self.guard.authorize(extract_key(auth_pairs), path, client)
            if not self.guard.in_flight.try_acquire():
                raise self.guard.overloaded()
            acquired = True
            if await self._run_cancellable(scope, receive, send_wrapper):
                status = _STATUS_CLIENT_CLOSED
                state["client_closed"] = True  # the metrics middleware counts it as 499, not 500
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
            state["client_closed"] = True
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
                    model=state.get("model", ""),
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
