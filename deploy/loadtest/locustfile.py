"""Locust scenarios for the gateway's task routes (the same routes and bodies as ``deploy.loadtest``).

Headless, bounded, loopback only:

    locust -f deploy/loadtest/locustfile.py --host http://127.0.0.1:8080 --headless \
        -u 16 -r 8 --run-time 30s --csv reports/locust

Web UI: drop ``--headless`` and open http://127.0.0.1:8089. Pick the routes with
``LOADTEST_ROUTES=classify,segment,generate`` (default: classify). Routes that answer 404 (not
deployed yet) are reported as failures named after the route, so they are easy to spot.
``FastHttpUser`` (geventhttpclient) keeps the generator's CPU per request low; ``deploy.loadtest``
remains the tool for open-loop (scheduled) load and coordinated-omission-free latencies.
"""

from __future__ import annotations

import os
import time
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

from deploy.loadtest.targets import ROUTES, STREAM_ROUTES, SSECounter, build_request

SELECTED = [r.strip() for r in os.environ.get("LOADTEST_ROUTES", "classify").split(",") if r.strip()]
MODEL = os.environ.get("LOADTEST_MODEL") or None
MAX_NEW_TOKENS = int(os.environ.get("LOADTEST_MAX_NEW_TOKENS", "64"))
for _route in SELECTED:
    if _route not in ROUTES:
        raise ValueError(f"LOADTEST_ROUTES: unknown route {_route!r}; choose from {', '.join(ROUTES)}")
SPECS = {route: build_request(route, None, MODEL, max_new_tokens=MAX_NEW_TOKENS) for route in SELECTED}


class GatewayUser(FastHttpUser):
    """One simulated client: picks a selected route per task, no think time by default."""

    wait_time = between(
        float(os.environ.get("LOADTEST_WAIT_MIN", "0")), float(os.environ.get("LOADTEST_WAIT_MAX", "0"))
    )

    def _plain(self, route: str) -> None:
        spec = SPECS[route]
        with self.client.post(
            spec.path, data=spec.body, headers=spec.headers, name=route, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")

    def _stream(self, route: str) -> None:
        spec = SPECS[route]
        start = time.perf_counter()
        counter = SSECounter()
        with self.client.post(
            spec.path, data=spec.body, headers=spec.headers, name=route, stream=True, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            buf = b""
            for chunk in resp.iter_content(chunk_size=4096, decode_content=False):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    counter.feed_line(line.decode("utf-8", "replace"))
            if buf:
                counter.feed_line(buf.decode("utf-8", "replace"))
            if counter.error or counter.total == 0:
                resp.failure(counter.error or "stream carried no tokens")
                return
        if counter.first_token_at is not None:  # TTFT as its own row in Locust's statistics
            events.request.fire(
                request_type="SSE",
                name=f"{route}: time to first token",
                response_time=1e3 * (counter.first_token_at - start),
                response_length=0,
                exception=None,
                context={},
            )

    @task
    def one_request(self) -> None:
        route = SELECTED[int(time.perf_counter_ns()) % len(SELECTED)]
        if route in STREAM_ROUTES:
            self._stream(route)
        else:
            self._plain(route)


def _check_host(environment: Any, **_: Any) -> None:
    host = (environment.host or "").split("://")[-1].split(":")[0].strip("[]")
    if host and not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit(f"locustfile: --host must be a loopback address, not {host!r}")


events.init.add_listener(_check_host)
