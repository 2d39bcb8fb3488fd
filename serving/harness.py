"""The one process harness: an embedded Triton and the gateway, started, polled ready, stopped.

Everything that runs the stack on this machine goes through here, each with its own ports, logs,
environment and timeouts: ``make serve`` (serving/local.py: the gateway in this process), the
gateway's own entry point (``python -m serving.gateway``), the demos and benchmarks (deploy/stack.py,
deploy/bench/stack.py), the soak's embedded stack (deploy/soak.py) and the test fixtures
(tests/support/procs.py, tests/support/stack.py).

Child processes are tied to the process that started them (PR_SET_PDEATHSIG), readiness is polled
(never a fixed sleep), and a start that fails stops what it started and says why, log tail included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import uvicorn

from serving.procutil import free_port, poll
from serving.triton import launcher

if TYPE_CHECKING:
    from serving.gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BACKEND_DIR = ROOT / "build" / "triton-backends"
LOOPBACK = "127.0.0.1"
GATEWAY_FACTORY = "serving.gateway.main:create_app"

# How the gateway process is started: "factory" = ``uvicorn --factory serving.gateway.main:create_app``
# (as the container runs it), "main" = ``python -m serving.gateway`` (settings -> uvicorn, graceful drain).
GatewayEntry = Literal["factory", "main"]


def log_tail(log: Path | None, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log is not None and log.exists() else ""


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (servers drain), then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Triton ----------------------------------------------------------------------------------


@dataclass
class TritonProcess:
    proc: subprocess.Popen[bytes]
    cfg: launcher.TritonConfig
    log: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.cfg.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.cfg.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.cfg.metrics_port}/metrics"

    def stop(self) -> None:
        launcher.stop(self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_triton(
    repository: Path,
    log: Path | None,
    *,
    ports: tuple[int, int, int] | None = None,
    model_control: str = "none",
    load_models: Sequence[str] = (),
    backend_dir: Path = BACKEND_DIR,
    timeout: float = 120.0,
) -> TritonProcess:
    """tritonserver on ``ports`` (HTTP, gRPC, metrics; default: free ones), returned once ready."""
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    cfg = launcher.TritonConfig(
        repository,
        http,
        grpc,
        metrics,
        backend_dir=backend_dir,
        model_control=model_control,
        load_models=list(load_models),
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    proc = launcher.start(cfg, log)
    try:
        launcher.wait_ready(cfg, proc, timeout=timeout)
    except BaseException as exc:  # Ctrl-C while waiting stops it too
        launcher.stop(proc)
        if not isinstance(exc, Exception):
            raise
        raise RuntimeError(f"triton failed to start: {exc}; log tail:\n{log_tail(log, 4000)}") from None
    return TritonProcess(proc, cfg, log)


# --- the gateway (and other uvicorn apps) as processes -----------------------------------------


@dataclass
class ServerProcess:
    """A server process on 127.0.0.1:``port`` (the gateway, or any app the benchmarks compare)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.proc, timeout)


def start_server(
    cmd: list[str],
    port: int,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
    timeout: float = 60.0,
    what: str = "server",
) -> ServerProcess:
    """Run ``cmd`` (serving HTTP on ``port``) from the repository root; return once ``ready_path`` is 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=launcher._die_with_parent,  # a killed parent leaves no server behind
        )
    server = ServerProcess(proc, port, log)
    try:
        poll(lambda: http_ok(server.url + ready_path), timeout, what, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


def uvicorn_command(
    app: str,
    port: int,
    *,
    factory: bool = False,
    log_level: str = "warning",
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port)]
    cmd += ["--no-access-log", "--log-level", log_level, *extra_args]
    if factory:
        cmd.insert(3, "--factory")
    return cmd


def start_gateway(
    triton_grpc_url: str,
    log: Path | None = None,
    *,
    workdir: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    entry: GatewayEntry = "factory",
    ready_path: str = "/readyz",
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """The gateway as its own process, as deployed, talking to Triton at ``triton_grpc_url``.

    ``log`` defaults to ``workdir/gateway-<port>.log``. ``ready_path`` "/healthz" returns as soon as
    it listens, "/readyz" once it reaches Triton and has discovered the models.
    """
    port = port or free_port()
    if log is None:
        if workdir is None:
            raise ValueError("start_gateway needs a log path or a workdir")
        log = workdir / f"gateway-{port}.log"
    malloc = {k: v for k, v in launcher.MALLOC_ENV.items() if k not in os.environ}  # theirs wins
    full_env = {**malloc, "GATEWAY_TRITON_GRPC_URL": triton_grpc_url, **(env or {})}
    if entry == "main":
        cmd = [sys.executable, "-m", "serving.gateway", *extra_args]
        full_env = {"GATEWAY_HOST": LOOPBACK, "GATEWAY_PORT": str(port), **full_env}
    else:
        cmd = uvicorn_command(GATEWAY_FACTORY, port, factory=True, extra_args=extra_args)
    return start_server(cmd, port, log, env=full_env, ready_path=ready_path, timeout=timeout, what="gateway")


# --- the gateway in this process ---------------------------------------------------------------


class GatewayServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process would die by the signal
    (exit -15) even after a clean drain; here the signal only asks for shutdown and we exit 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def gateway_server(settings: Settings, host: str, port: int, log_level: str | None = None) -> GatewayServer:
    """The gateway app under uvicorn with its settings applied: uvicorn's access log off (the guard
    middleware writes one structured line per request), SIGTERM drains in-flight requests for up to
    ``graceful_shutdown_s`` (uvicorn's own default waits forever), logging left to logs.py."""
    from serving.gateway.main import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        access_log=settings.access_log,
        log_level=log_level or settings.log_level,
        log_config=None,
        # uvicorn hands it to asyncio.wait_for: a float works, its annotation says int.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
    )
    return GatewayServer(config)


# --- both ------------------------------------------------------------------------------------


@dataclass
class Stack:
    """Triton plus the gateway (HTTP; the gRPC door and the admin API when asked for)."""

    triton: TritonProcess
    gateway: ServerProcess
    grpc_port: int | None
    admin_key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def stop(self) -> None:
        """The gateway first (it drains), then Triton."""
        self.gateway.stop()
        self.triton.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stack(
    repository: Path,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    model_control: str = "explicit",
    load_models: Sequence[str] = ("*",),
    grpc_door: bool = True,
    admin_key: str = "",
    entry: GatewayEntry = "factory",
    triton_log: str = "triton-{grpc_port}.log",
    gateway_log: str = "gateway-{port}.log",
    triton_timeout: float = 120.0,
    gateway_timeout: float = 60.0,
) -> Stack:
    """Triton on free ports (explicit model control, every model loaded, by default) and the gateway
    pointed at it, its per-request log lines off. Log names are formatted with the ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = free_port(), free_port(), free_port()
    triton = start_triton(
        repository,
        workdir / triton_log.format(grpc_port=ports[1]),
        ports=ports,
        model_control=model_control,
        load_models=load_models,
        timeout=triton_timeout,
    )
    port, grpc_port = free_port(), (free_port() if grpc_door else None)
    gateway_env = {
        "GATEWAY_TRITON_HTTP_URL": triton.http_url,
        "GATEWAY_REQUEST_LOG": "false",
        **({"GATEWAY_GRPC_PORT": str(grpc_port)} if grpc_port is not None else {}),
        **({"GATEWAY_ADMIN_KEY": admin_key} if admin_key else {}),
        **(env or {}),
    }
    try:
        gateway = start_gateway(
            triton.grpc_url,
            workdir / gateway_log.format(port=port),
            port=port,
            env=gateway_env,
            entry=entry,
            timeout=gateway_timeout,
        )
    except BaseException:
        triton.stop()
        raise
    return Stack(triton, gateway, grpc_port, admin_key)
