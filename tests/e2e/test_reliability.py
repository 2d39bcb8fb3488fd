"""Faults, overload and security against real processes: our own Triton (we kill it) + gateways.

The repository holds the tiny classifier and ``slow_classifier`` (tests/support/slow_model.py),
which holds each request ~1 s inside Triton and logs "<request id> done|cancelled": requests
are provably in flight when we kill Triton, disconnect or SIGTERM, with no timing luck involved.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.faults import (
    RestartableTriton,
    digit_png,
    metric,
    rss_mib,
    start_gateway_main,
    terminate,
    wait_for_line,
)
from tests.support.procs import ROOT, GatewayHandle, poll
from tests.support.slow_model import write_slow_model

pytestmark = pytest.mark.slow

KEY_A, KEY_B, KEY_C = "key-a-0123456789abcdef", "key-b-0123456789abcdef", "key-c-0123456789abcdef"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
PNG = digit_png()
SLOW = {"model": "slow_classifier"}
REPORT = ROOT / "reports" / "reliability.json"


def _report(section: str, data: dict) -> None:
    """Figures worth reading (RSS, recovery time) go to reports/reliability.json, not assertions."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    current[section] = data
    REPORT.write_text(json.dumps(current, indent=2))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def events(workdir: Path) -> Path:
    return workdir / "slow-events.log"


@pytest.fixture(scope="module")
def triton(workdir: Path, model_repository: Path, events: Path) -> Iterator[RestartableTriton]:
    repo = workdir / "repo"
    shutil.copytree(model_repository / "cpu" / "classifier", repo / "classifier")
    write_slow_model(repo, events, sleep_ms=1000)
    t = RestartableTriton(repo, workdir)
    yield t
    t.stop()


@pytest.fixture(scope="module")
def secured(triton: RestartableTriton, workdir: Path) -> Iterator[GatewayHandle]:
    """API keys (A unlimited, B 3/minute from the secrets file; C from the env), max_in_flight=4."""
    keys = workdir / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n{KEY_B} 3/minute\n")
    gw = start_gateway_main(
        triton.grpc_url,
        workdir,
        {"GATEWAY_API_KEYS": KEY_C, "GATEWAY_API_KEYS_FILE": str(keys), "GATEWAY_MAX_IN_FLIGHT": "4"},
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def plain(triton: RestartableTriton, workdir: Path) -> Iterator[GatewayHandle]:
    """No keys, default limits: for the Triton-kill and graceful-drain tests."""
    gw = start_gateway_main(triton.grpc_url, workdir, {"GATEWAY_GRACEFUL_SHUTDOWN_S": "20"})
    yield gw
    gw.stop()


def classify(
    url: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 30,
    body: bytes = PNG,
) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/classify",
        content=body,
        params=params,
        headers={"content-type": "image/png", **(headers or {})},
        timeout=timeout,
    )


# --- security --------------------------------------------------------------------------------


def test_api_key_required_when_configured(secured: GatewayHandle) -> None:
    r = classify(secured.url)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["x-request-id"]
    assert classify(secured.url, {"Authorization": "Bearer wrong-key"}).status_code == 401
    assert classify(secured.url, {"X-API-Key": KEY_A + "x"}).status_code == 401
    assert classify(secured.url, AUTH_A).status_code == 200
    assert classify(secured.url, {"X-API-Key": KEY_C}).status_code == 200  # from GATEWAY_API_KEYS
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):  # probes and docs stay open
        assert httpx.get(secured.url + path).status_code == 200, path
    spec = httpx.get(secured.url + "/openapi.json").json()
    assert spec["paths"]["/v1/classify"]["post"]["security"]
    assert "401" in spec["paths"]["/v1/classify"]["post"]["responses"]
    assert metric(secured.url, "gateway_rejected_total", reason="unauthorized") >= 3
    log = secured.log.read_text()
    assert KEY_A not in log and KEY_C not in log and "wrong-key" not in log  # keys never logged


def test_rate_limit_per_key(secured: GatewayHandle) -> None:
    auth_b = {"Authorization": f"Bearer {KEY_B}"}
    statuses = [classify(secured.url, auth_b).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    r = classify(secured.url, auth_b)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert classify(secured.url, AUTH_A).status_code == 200  # limits are per key
    assert metric(secured.url, "gateway_rejected_total", reason="rate_limited") >= 1


def test_request_id_echoed_logged_and_sent_to_triton(secured: GatewayHandle, events: Path) -> None:
    r = classify(secured.url, {**AUTH_A, "X-Request-ID": "rid-echo-1"}, SLOW)
    assert r.status_code == 200 and r.headers["x-request-id"] == "rid-echo-1"
    wait_for_line(events, "rid-echo-1 done")  # Triton's model saw the same id
    bad = classify(secured.url, {**AUTH_A, "X-Request-ID": "not ok;" + "x" * 300})
    assert bad.status_code == 200 and len(bad.headers["x-request-id"]) == 32  # replaced by a fresh uuid
    # A control character is not HTTP at all (RFC 9110 field-value): the HTTP parser answers 400.
    assert classify(secured.url, {**AUTH_A, "X-Request-ID": "not ok\x7f"}).status_code == 400
    fresh = classify(secured.url, AUTH_A)
    assert (
        len(fresh.headers["x-request-id"]) == 32
        and fresh.headers["x-request-id"] != bad.headers["x-request-id"]
    )
    assert httpx.get(secured.url + "/nope").headers["x-request-id"]  # every response, errors too

    def logged() -> dict:
        for line in secured.log.read_text().splitlines():
            if line.startswith("{") and '"rid-echo-1"' in line:
                return json.loads(line)
        return {}

    poll(lambda: bool(logged()), 10, "request log line")
    entry = logged()
    assert entry["event"] == "request" and entry["route"] == "/v1/classify" and entry["status"] == 200
    assert entry["model"] == "slow_classifier" and entry["latency_ms"] > 0 and len(entry["key_id"]) == 12


def test_deadline_header_reaches_triton(secured: GatewayHandle, events: Path) -> None:
    r = classify(secured.url, {**AUTH_A, "X-Request-ID": "rid-deadline", "X-Request-Timeout": "0.3"}, SLOW)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    wait_for_line(events, "rid-deadline cancelled")  # the gRPC deadline cancelled the work in Triton
    bad = classify(secured.url, {**AUTH_A, "X-Request-Timeout": "soon"})
    assert bad.status_code == 422 and "X-Request-Timeout" in bad.json()["error"]["message"]


def test_client_disconnect_cancels_triton_work(secured: GatewayHandle, events: Path) -> None:
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.3 s and closes the socket
        classify(secured.url, {**AUTH_A, "X-Request-ID": "rid-gone"}, SLOW, timeout=0.3)
    wait_for_line(events, "rid-gone cancelled")
    poll(
        lambda: metric(secured.url, "gateway_requests_total", route="/v1/classify", status="499") >= 1,
        10,
        "499 counted",
    )


# --- overload --------------------------------------------------------------------------------


async def _burst(url: str, n: int, body: bytes) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/classify", content=body, params=SLOW, headers={"content-type": "image/png", **AUTH_A}
                )
                for _ in range(n)
            )
        )


def test_burst_beyond_max_in_flight_sheds_with_429_and_memory_stays_flat(secured: GatewayHandle) -> None:
    body = digit_png(512, noise=True)  # ~260 KB each: a burst that would show in RSS if buffered
    pid = secured.proc.pid
    rss = [rss_mib(pid)]
    rounds = []
    for _ in range(3):  # 3 bursts of 10x max_in_flight
        responses = asyncio.run(_burst(secured.url, 40, body))
        statuses = [r.status_code for r in responses]
        rounds.append({s: statuses.count(s) for s in set(statuses)})
        rss.append(rss_mib(pid))
        assert set(statuses) <= {200, 429}, statuses  # no 5xx, nothing lost
        assert statuses.count(429) >= 1 and statuses.count(200) >= 1
        for r in responses:
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
    assert metric(secured.url, "gateway_rejected_total", reason="overloaded") >= 3
    _report(
        "burst",
        {
            "requests_per_burst": 40,
            "max_in_flight": 4,
            "body_bytes": len(body),
            "statuses": rounds,
            "gateway_rss_mib": [round(x, 1) for x in rss],
        },
    )
    assert rss[-1] - rss[1] < 64, rss  # generous bound: growth after the first burst is noise, not buffering


# --- faults ----------------------------------------------------------------------------------


def test_triton_killed_under_load_503s_then_recovers_without_gateway_restart(
    plain: GatewayHandle, triton: RestartableTriton
) -> None:
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(classify, plain.url, None, SLOW, 20) for _ in range(3)]
        poll(
            lambda: metric(plain.url, "gateway_requests_in_flight", route="/v1/classify") >= 3,
            20,
            "3 in flight",
        )
        triton.kill()
        answers = [f.result() for f in in_flight]  # each ends well within its 20 s timeout
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "upstream_unavailable" and r.headers["retry-after"]
    down = classify(plain.url)
    assert down.status_code == 503 and down.headers["retry-after"]
    poll(lambda: httpx.get(plain.url + "/readyz").status_code == 503, 10, "readyz false")

    start = time.monotonic()
    triton.restart()  # same ports; returns when Triton reports ready
    triton_ready = time.monotonic()
    poll(lambda: classify(plain.url, timeout=5).status_code == 200, 30, "gateway serving again")
    recovered = time.monotonic()
    poll(lambda: httpx.get(plain.url + "/readyz").status_code == 200, 10, "readyz true")
    assert plain.proc.poll() is None  # the same gateway process throughout
    _report(
        "triton_restart",
        {
            "triton_start_s": round(triton_ready - start, 2),
            "gateway_recovery_after_triton_ready_s": round(recovered - triton_ready, 3),
        },
    )


def test_graceful_shutdown_drains_in_flight_requests(plain: GatewayHandle) -> None:
    with ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(classify, plain.url, None, SLOW, 30) for _ in range(3)]
        poll(
            lambda: metric(plain.url, "gateway_requests_in_flight", route="/v1/classify") >= 3,
            20,
            "3 in flight",
        )
        terminate(plain)
        answers = [f.result() for f in in_flight]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert plain.proc.wait(30) == 0
    with pytest.raises(httpx.ConnectError):  # it no longer accepts
        httpx.get(plain.url + "/healthz", timeout=2)
