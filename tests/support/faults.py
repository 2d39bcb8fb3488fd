"""Helpers for fault and overload tests: a Triton that can be killed and restarted on the same
ports, the gateway started as deployed (``python -m serving.gateway``), RSS, metric scraping."""

from __future__ import annotations

import contextlib
import io
import re
import signal
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from serving import harness
from tests.support.procs import GatewayHandle, TritonHandle, poll, start_triton


class RestartableTriton:
    """A Triton of the test's own: SIGKILL it under load, start it again on the same ports."""

    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo, self.workdir = repo, workdir
        self.handle: TritonHandle = start_triton(repo, workdir)
        self.ports = (self.handle.cfg.http_port, self.handle.cfg.grpc_port, self.handle.cfg.metrics_port)

    @property
    def grpc_url(self) -> str:
        return self.handle.grpc_url

    def kill(self) -> None:
        """SIGKILL Triton and its Python-backend stubs at once, as a crashed container would go.

        (Orphaned stubs only notice a dead parent after many seconds: not worth waiting for.)"""
        children = _children(self.handle.proc.pid)
        self.handle.kill()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=10)

    def restart(self) -> None:
        self.handle = start_triton(self.repo, self.workdir, ports=self.ports)

    def stop(self) -> None:
        self.handle.stop()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def start_gateway_main(
    triton_grpc_url: str, workdir: Path, env: dict[str, str] | None = None
) -> GatewayHandle:
    """The gateway through ``python -m serving.gateway`` (settings -> uvicorn, graceful drain)."""
    return harness.start_gateway(triton_grpc_url, workdir=workdir, env=env, entry="main")


def terminate(handle: GatewayHandle) -> None:
    handle.proc.send_signal(signal.SIGTERM)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1024 * 1024)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def digit_png(side: int = 32, seed: int = 0, noise: bool = False) -> bytes:
    """A grayscale PNG; ``noise`` makes it incompressible (a PNG about side*side bytes)."""
    rng = np.random.default_rng(seed)
    arr = (
        rng.integers(0, 256, (side, side), dtype=np.uint8)
        if noise
        else np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    )
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def wait_for_line(path: Path, line: str, timeout: float = 30) -> None:
    poll(lambda: path.exists() and line in path.read_text().splitlines(), timeout, f"{line!r} in {path.name}")
