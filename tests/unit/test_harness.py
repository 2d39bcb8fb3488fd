"""serving/harness.py without Triton: commands, readiness polling, failing fast, stopping."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serving import harness
from serving.procutil import free_port


def test_gateway_factory_command_is_the_deployed_one() -> None:
    cmd = harness.uvicorn_command(harness.GATEWAY_FACTORY, 1234, factory=True, extra_args=["--workers", "2"])
    assert cmd[:5] == [sys.executable, "-m", "uvicorn", "--factory", "serving.gateway.main:create_app"]
    assert cmd[5:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "1234",
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        "2",
    ]


def test_server_is_polled_ready_then_stopped(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = harness.start_server(cmd, port, tmp_path / "http.log", ready_path="/", timeout=30)
    assert server.url == f"http://127.0.0.1:{port}" and harness.http_ok(server.url + "/")
    server.stop()
    assert server.proc.poll() is not None


def test_a_server_that_exits_fails_fast_with_its_log(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "print('no such model'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match="exited with 3") as info:
        harness.start_server(cmd, free_port(), tmp_path / "bad.log", timeout=30, what="bad")
    assert "no such model" in str(info.value)


def test_gateway_needs_a_log_or_a_workdir() -> None:
    with pytest.raises(ValueError):
        harness.start_gateway("127.0.0.1:1")
