"""Real processes on free loopback ports, polled for readiness (never a fixed sleep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.procutil import free_port, poll
from serving.triton import launcher

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TritonHandle:
    proc: subprocess.Popen
    cfg: launcher.TritonConfig
    log: Path

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.cfg.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.cfg.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.metrics_port}/metrics"

    def stop(self) -> None:
        launcher.stop(self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_triton(
    repo: Path,
    workdir: Path,
    model_control: str = "none",
    load_models: list[str] | None = None,
    ports: tuple[int, int, int] | None = None,
) -> TritonHandle:
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    cfg = launcher.TritonConfig(
        repo,
        http,
        grpc,
        metrics,
        backend_dir=ROOT / "build" / "triton-backends",
        model_control=model_control,
        load_models=load_models or [],
    )
    log = workdir / f"triton-{grpc}.log"
    proc = launcher.start(cfg, log)
    try:
        launcher.wait_ready(cfg, proc, timeout=120)
    except Exception:
        launcher.stop(proc)
        raise RuntimeError(f"triton failed to start; log:\n{log.read_text()[-4000:]}") from None
    return TritonHandle(proc, cfg, log)


@dataclass
class GatewayHandle:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(
    triton_grpc_url: str, workdir: Path, env: dict[str, str] | None = None, wait_ready: bool = True
) -> GatewayHandle:
    """The gateway as its own uvicorn process, exactly as it is deployed."""
    port = free_port()
    log = workdir / f"gateway-{port}.log"
    full_env = {**os.environ, "GATEWAY_TRITON_GRPC_URL": triton_grpc_url, **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "serving.gateway.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    out = log.open("ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    path = "/readyz" if wait_ready else "/healthz"
    try:
        poll(lambda: httpx.get(url + path, timeout=2).status_code == 200, 60, "gateway", proc, log)
    except Exception:
        GatewayHandle(proc, port, log).stop()
        raise
    return GatewayHandle(proc, port, log)
