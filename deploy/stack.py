"""Start the embedded stack on free loopback ports for the demos and benchmarks in deploy/.

Triton in explicit model-control mode (every model loaded at start) plus the gateway as its own
uvicorn process (as deployed, and so its CPU time can be read from /proc), with the gRPC front
door and the admin API on. Readiness is polled, never waited for with a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.procutil import free_port
from serving.triton import launcher

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LocalStack:
    triton: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    cfg: launcher.TritonConfig
    gateway_port: int
    grpc_port: int
    admin_key: str

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway_http(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    @property
    def gateway_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.cfg.http_port}"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.cfg.grpc_port}"

    @property
    def gateway_pid(self) -> int:
        return self.gateway.pid

    def stop(self) -> None:
        if self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        launcher.stop(self.triton)


def start_local_stack(
    repository: Path, workdir: Path, env: dict[str, str] | None = None, timeout: float = 180.0
) -> LocalStack:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = launcher.TritonConfig(
        repository,
        free_port(),
        free_port(),
        free_port(),
        backend_dir=ROOT / "build" / "triton-backends",
        model_control="explicit",
        load_models=["*"],
    )
    triton = launcher.start(cfg, workdir / "triton.log")
    try:
        launcher.wait_ready(cfg, triton, timeout=timeout)
    except Exception:
        launcher.stop(triton)
        raise
    port, grpc_port, admin_key = free_port(), free_port(), secrets.token_urlsafe(16)
    full_env = {
        **os.environ,
        "GATEWAY_TRITON_GRPC_URL": f"127.0.0.1:{cfg.grpc_port}",
        "GATEWAY_TRITON_HTTP_URL": f"127.0.0.1:{cfg.http_port}",
        "GATEWAY_GRPC_PORT": str(grpc_port),
        "GATEWAY_ADMIN_KEY": admin_key,
        "GATEWAY_REQUEST_LOG": "false",
        **(env or {}),
    }
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
    with (workdir / "gateway.log").open("ab") as log:
        gateway = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    stack = LocalStack(triton, gateway, cfg, port, grpc_port, admin_key)
    deadline, delay = time.monotonic() + timeout, 0.05
    while True:
        if gateway.poll() is not None:
            stack.stop()
            raise RuntimeError(f"gateway exited with {gateway.returncode}; see {workdir / 'gateway.log'}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{stack.gateway_url}/readyz", timeout=2).status_code == 200:
                return stack
        if time.monotonic() > deadline:
            stack.stop()
            raise TimeoutError(f"gateway not ready after {timeout:.0f}s; see {workdir / 'gateway.log'}")
        time.sleep(delay)  # readiness polling interval
        delay = min(delay * 1.5, 0.5)
