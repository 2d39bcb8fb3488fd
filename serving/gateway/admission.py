"""Whether a call may run now: its deadline, the rate limits of its caller, and load shedding.

- **Deadline**: ``X-Request-Timeout`` (seconds, >= 0.1; larger than ``max_request_timeout_s`` is
  capped), default ``triton_timeout_s``; a monotonic deadline, passed on to Triton as the gRPC one.
- **Rate limit** per key (per client address without keys): the ``limits`` library's moving
  window. Why not a hand-made token bucket: the moving window is exact (no double burst at a
  window edge), ``"20/second;600/minute"`` expresses a burst cap plus a sustained rate like a
  bucket would, Retry-After comes from the window's reset time, and
  ``GATEWAY_RATE_LIMIT_STORAGE=redis://...`` shares the limits across gateway replicas with no
  code change. Its cost is a few microseconds per request in memory.
- **Load shedding**: at most ``max_in_flight`` requests per process; the next one gets 429 with
  Retry-After at once (a counter: no queue, no memory growth under a burst).

Every refusal is counted in ``gateway_rejected_total`` by reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator

from limits import RateLimitItem
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from serving.gateway import errors
from serving.gateway.auth import Principal, parse_limits
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import Settings

MIN_REQUEST_TIMEOUT_S = 0.1  # shorter deadlines cannot cover one Triton round trip: refused (422)


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


class Admission:
    """Deadlines, rate limits and the in-flight cap of one gateway process (both doors)."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.anon_limits = parse_limits(settings.rate_limit)
        storage = settings.rate_limit_storage
        self.limiter = MovingWindowRateLimiter(
            storage_from_string(storage if storage.startswith("async+") else f"async+{storage}")
        )
        self.in_flight = InFlightLimiter(settings.max_in_flight)

    def reject(self, reason: str, exc: errors.APIError) -> errors.APIError:
        self.metrics.rejected.labels(reason).inc()
        return exc

    async def rate_limit(self, principal: Principal) -> None:
        """Count one call against the caller's limits; raise the 429 APIError when one is spent."""
        if not principal.limits:
            return
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
        """One in-flight slot (raises the 429 APIError when full)."""
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
