"""Real processes on free loopback ports, polled for readiness (never a fixed sleep): the test
fixtures' names for serving/harness.py."""

from __future__ import annotations

from pathlib import Path

from serving import harness
from serving.procutil import free_port, poll

__all__ = ["ROOT", "GatewayHandle", "TritonHandle", "free_port", "poll", "start_gateway", "start_triton"]

ROOT = harness.ROOT
TritonHandle = harness.TritonProcess
GatewayHandle = harness.ServerProcess


def start_triton(
    repo: Path,
    workdir: Path,
    model_control: str = "none",
    load_models: list[str] | None = None,
    ports: tuple[int, int, int] | None = None,
) -> TritonHandle:
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    return harness.start_triton(
        repo,
        workdir / f"triton-{grpc}.log",
        ports=(http, grpc, metrics),
        model_control=model_control,
        load_models=load_models or [],
    )


def start_gateway(
    triton_grpc_url: str, workdir: Path, env: dict[str, str] | None = None, wait_ready: bool = True
) -> GatewayHandle:
    """The gateway as its own uvicorn process, exactly as it is deployed."""
    return harness.start_gateway(
        triton_grpc_url, workdir=workdir, env=env, ready_path="/readyz" if wait_ready else "/healthz"
    )
