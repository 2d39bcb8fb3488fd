"""Real server processes for the benchmark: Triton, the gateway, the naive apps; free ports, polled ready.

Started through serving/harness.py (as the tests and the soak are). Every process started here is
stopped by the context manager that started it, also on errors.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from serving import harness
from serving.harness import http_ok, stop_process
from serving.procutil import free_port, poll

__all__ = ["free_port", "http_ok", "poll", "stop_process"]  # deploy/soak.py and older callers

ROOT = harness.ROOT

PIDS: dict[str, int] = {}  # base URL -> server pid, for CPU accounting


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (Triton's backend stubs), from /proc.

    CPU per request is far steadier than throughput on a shared machine: it says what each
    component costs, whoever else is running.
    """
    total, todo, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            todo += _children(p)
    return total


@dataclass
class Triton:
    proc: Popen | None  # None: a server someone else runs
    grpc_url: str
    http_url: str
    metrics_url: str


@contextlib.contextmanager
def triton(repo: Path, workdir: Path, model_control: str = "none") -> Iterator[Triton]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    t = harness.start_triton(
        repo, workdir / f"triton-{grpc}.log", ports=(http, grpc, metrics), model_control=model_control
    )
    try:
        yield Triton(t.proc, t.grpc_url, f"http://{t.http_url}", t.metrics_url)
    finally:
        t.stop()


@contextlib.contextmanager
def _registered(server: harness.ServerProcess) -> Iterator[str]:
    PIDS[server.url] = server.pid
    try:
        yield server.url
    finally:
        server.stop()
        PIDS.pop(server.url, None)


@contextlib.contextmanager
def uvicorn_app(
    app: str,
    workdir: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
    factory: bool = False,
    workers: int = 1,
    extra_args: list[str] | None = None,
) -> Iterator[str]:
    """``app`` ("module:attr") as its own uvicorn process on a free port; yields its base URL."""
    port = free_port()
    log = workdir / f"{app.split(':')[0].rsplit('.', 1)[-1]}-{port}.log"
    cmd = harness.uvicorn_command(
        app, port, factory=factory, extra_args=["--workers", str(workers), *(extra_args or [])]
    )
    server = harness.start_server(cmd, port, log, env=env, ready_path=ready_path, timeout=120, what=app)
    with _registered(server) as url:
        yield url


@contextlib.contextmanager
def gateway(
    triton_grpc_url: str,
    workdir: Path,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[str]:
    """The gateway exactly as deployed: ``uvicorn --factory serving.gateway.main:create_app``."""
    port = free_port()
    server = harness.start_gateway(
        triton_grpc_url,
        workdir / f"main-{port}.log",
        port=port,
        env=env,
        timeout=120,
        extra_args=extra_args or [],
    )
    with _registered(server) as url:
        yield url


def scrape(metrics_url: str) -> dict[tuple[str, str], float]:
    """Triton's Prometheus text -> {(metric, model): value} for the nv_inference_* counters we use."""
    wanted = (
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_success",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_request_duration_us",
    )
    out: dict[tuple[str, str], float] = {}
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if not line.startswith("nv_inference_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        if name not in wanted:
            continue
        labels, _, value = rest.rpartition("}")
        model = next(
            (kv.split("=", 1)[1].strip('"') for kv in labels.split(",") if kv.startswith("model=")), ""
        )
        out[(name, model)] = out.get((name, model), 0.0) + float(value)
    return out


def triton_stats(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], model: str
) -> dict[str, float | None]:
    """What Triton did for ``model`` between two scrapes: batch size, queue and compute time."""

    def delta(name: str) -> float:
        return after.get((name, model), 0.0) - before.get((name, model), 0.0)

    inferences, executions, requests = (
        delta("nv_inference_count"),
        delta("nv_inference_exec_count"),
        delta("nv_inference_request_success"),
    )
    if not requests:
        return {"requests": 0.0}
    return {
        "requests": requests,
        "avg_batch_size": round(inferences / executions, 2) if executions else None,
        "queue_us_per_request": round(delta("nv_inference_queue_duration_us") / requests, 1),
        # Triton charges every request the whole batch's compute: sum / requests ~ one execution's time.
        "compute_us_per_execution": round(delta("nv_inference_compute_infer_duration_us") / requests, 1),
        "request_us_per_request": round(delta("nv_inference_request_duration_us") / requests, 1),
    }
