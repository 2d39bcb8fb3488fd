"""The load engine, its report and its request builders: pure logic, no server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from deploy.loadtest.engine import Outcome, RunResult, arrival_times, run_closed, run_open
from deploy.loadtest.report import format_table, summarise
from deploy.loadtest.targets import SSECounter, build_request, multipart_body, synthetic_png
from tests.support.procs import ROOT


class FakeTarget:
    """Answers after yielding to the loop; every third answer is a 503."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    async def open(self, pool_size: int) -> None:
        pass

    async def call(self) -> Outcome:
        self.calls += 1
        n = self.calls
        await asyncio.sleep(0)
        return Outcome("503", False) if n % 3 == 0 else Outcome("200", True)

    async def close(self) -> None:
        pass


def test_arrival_times_poisson_and_uniform() -> None:
    poisson = arrival_times(100.0, 5000, "poisson", seed=1)
    assert poisson[0] == 0.0 and np.all(np.diff(poisson) >= 0)
    assert 0.9 < 5000 / poisson[-1] / 100.0 < 1.1  # mean rate within 10% over 5000 draws
    uniform = arrival_times(50.0, 4, "uniform")
    assert np.allclose(uniform, [0.0, 0.02, 0.04, 0.06])
    with pytest.raises(ValueError):
        arrival_times(1.0, 2, "bursty")


def test_closed_loop_is_bounded_by_requests_and_counts_errors() -> None:
    target = FakeTarget()
    run = asyncio.run(run_closed(target, concurrency=4, duration_s=30.0, max_requests=30, warmup_s=0.0))
    assert run.stopped_by == "requests" and run.ok.size == 30
    summary = summarise(run)
    assert summary["requests"] == 30 and summary["failed"] == summary["errors"]["503"] == 10
    assert summary["latency_ms"] is not None and set(summary["latency_ms"]) >= {"p50", "p95", "p99"}


def test_open_loop_sends_the_scheduled_count() -> None:
    run = asyncio.run(run_open(FakeTarget(), rate=400.0, duration_s=0.1, arrivals="uniform"))
    assert run.mode == "open" and run.ok.size == 40 and run.late_s.size == 40
    summary = summarise(run)
    assert summary["rate_rps"] == 400.0 and "send_late_ms" in summary and "achieved_rate_rps" in summary
    capped = asyncio.run(run_open(FakeTarget(), rate=1000.0, duration_s=10.0, max_requests=25))
    assert capped.ok.size == 25 and capped.stopped_by == "requests"


def test_sse_counter_reads_the_gateway_stream() -> None:
    c = SSECounter()
    for line in [
        'data: {"text": "Fair "}',
        "",
        'data: {"text": "Verona"}',
        "",
        "event: done",
        'data: {"finish_reason": "length", "usage": {"completion_tokens": 11}}',
        "",
        "data: [DONE]",
    ]:
        c.feed_line(line)
    assert c.tokens == 11 and c.total == 11 and c.error is None and c.first_token_at is not None
    err = SSECounter()
    for line in ["event: error", 'data: {"error": {"code": "upstream_unavailable"}}']:
        err.feed_line(line)
    assert err.error is not None and err.total == 0


def test_streams_report_ttft_and_tokens() -> None:
    run = RunResult(
        "gen",
        "closed",
        2,
        1.0,
        np.array([0.5, 0.7]),
        ["200", "200"],
        np.array([True, True]),
        np.array([0.01, 0.02]),
        np.array([64, 64]),
        0.1,
    )
    s = summarise(run)
    assert s["tokens"] == 128 and s["tokens_per_s"] == 128.0 and s["ttft_ms"]["p50"] == pytest.approx(15.0)
    assert "gen" in format_table([s])


def test_request_builders() -> None:
    png = synthetic_png(16, 3)
    assert png.startswith(b"\x89PNG")
    body, ctype = multipart_body(png)
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    spec = build_request("classify", model="classifier")
    assert spec.path == "/v1/classify?model=classifier" and spec.headers["Content-Type"].startswith(
        "multipart/"
    )
    gen = build_request("generate", max_new_tokens=8)
    assert gen.stream and b'"stream": true' in gen.body and b'"max_new_tokens": 8' in gen.body


def test_cli_help_and_loopback_only() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "deploy.loadtest", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "--concurrency" in ok.stdout and "--rate" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "deploy.loadtest", "--url", "http://10.0.0.1:8080"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "loopback" in bad.stderr


def test_locustfile_imports() -> None:
    # In a child process: importing locust monkey-patches the standard library with gevent.
    code = "import deploy.loadtest.locustfile as m; assert m.GatewayUser and m.SPECS['classify'].body"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"LOADTEST_ROUTES": "classify,generate", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_raw_http_parser_finds_the_end_of_each_response() -> None:
    from deploy.loadtest.rawhttp import _parse

    whole = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert _parse(bytearray(whole)) == (200, len(whole), True)
    assert _parse(bytearray(whole[:-1])) is None
    chunked = b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert _parse(bytearray(chunked + b"HTTP/1.1")) == (429, len(chunked), True)
    closing = b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert _parse(bytearray(closing)) == (503, len(closing), False)
    with pytest.raises(ValueError):
        _parse(bytearray(b"SSH-2.0\r\n\r\n"))


async def test_raw_client_against_a_real_server() -> None:
    """The raw client over a real socket: keep-alive reuse, statuses, servers that close connections."""
    from deploy.loadtest.targets import HttpTarget, RequestSpec

    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    ln.split(b":")[1]
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length")
                )
            )
            seen.append(await reader.readexactly(length))
            served += 1
            status = b"200 OK" if served % 3 else b"422 Unprocessable"
            closing = served == 5
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Length: 2\r\n"
                + (b"Connection: close\r\n" if closing else b"")
                + b"\r\n{}"
            )
            await writer.drain()
            if closing or served == 3:  # 3: closed without saying so, as an idle keep-alive timeout does
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = HttpTarget(
        f"http://127.0.0.1:{port}", RequestSpec("classify", "/v1/classify", b"abc", {}), "raw"
    )
    await target.open(2)
    try:
        run = await run_closed(target, 2, 5.0, 20, 0.0)
    finally:
        await target.close()
        server.close()
    assert len(run.statuses) == 20 and seen == [b"abc"] * 20
    assert set(run.statuses) == {"200", "422"} and int(run.ok.sum()) == 20 - run.statuses.count("422")


def test_sse_counter_reads_openai_chat_chunks() -> None:
    c = SSECounter()
    for line in [
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        "",
        'data: {"choices":[{"index":0,"delta":{"content":"Who "}}]}',
        "",
        'data: {"choices":[{"index":0,"delta":{"content":"is"},"finish_reason":"length"}]}',
        "",
        'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}',
        "",
        "data: [DONE]",
    ]:
        c.feed_line(line)
    assert c.tokens == 6 and c.total == 6 and c.error is None and c.first_token_at is not None


def test_build_request_for_every_route() -> None:
    import json

    from deploy.loadtest.targets import IMAGE_ROUTES, ROUTES, STREAM_ROUTES

    for route in ROUTES:
        spec = build_request(route)
        assert spec.path.startswith(ROUTES[route]) and spec.body
        assert spec.stream == (route in STREAM_ROUTES)
        if route in IMAGE_ROUTES:
            assert spec.headers["Content-Type"].startswith("multipart/form-data")
        else:
            assert spec.headers["Content-Type"] == "application/json" and json.loads(spec.body)
    chat = json.loads(build_request("chat", max_new_tokens=5).body)
    assert chat["max_tokens"] == 5 and chat["stream_options"] == {"include_usage": True}
