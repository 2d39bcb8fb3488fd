"""Start the embedded stack on free loopback ports for the demos and benchmarks in deploy/.

Triton in explicit model-control mode (every model loaded at start) plus the gateway as its own
uvicorn process (as deployed, and so its CPU time can be read from /proc), with the gRPC front
door and the admin API on: serving/harness.py, with this module's log names and timeouts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from serving import harness


@dataclass
class LocalStack:
    stack: harness.Stack

    @property
    def admin_key(self) -> str:
        return self.stack.admin_key

    @property
    def gateway_url(self) -> str:
        return self.stack.url

    @property
    def gateway_http(self) -> str:
        return f"127.0.0.1:{self.stack.gateway.port}"

    @property
    def gateway_grpc(self) -> str:
        return self.stack.grpc_url

    @property
    def triton_http(self) -> str:
        return self.stack.triton.http_url

    @property
    def triton_grpc(self) -> str:
        return self.stack.triton.grpc_url

    @property
    def gateway_pid(self) -> int:
        return self.stack.gateway.pid

    def stop(self) -> None:
        self.stack.stop()


def start_local_stack(
    repository: Path, workdir: Path, env: dict[str, str] | None = None, timeout: float = 180.0
) -> LocalStack:
    return LocalStack(
        harness.start_stack(
            repository,
            workdir,
            env=env,
            admin_key=secrets.token_urlsafe(16),
            triton_log="triton.log",
            gateway_log="gateway.log",
            triton_timeout=timeout,
            gateway_timeout=timeout,
        )
    )
