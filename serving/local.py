"""The embedded stack: a real tritonserver (CPU, from the nvidia-pytriton wheel) plus the gateway.

    python -m serving.local --model-repository build/model_repository/cpu

Runs in the foreground. Ctrl-C (or SIGTERM) stops the gateway, then Triton; Triton is also
tied to this process with PR_SET_PDEATHSIG, so even a SIGKILL here leaves no orphan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from serving.gateway.__main__ import QuietServer
from serving.gateway.logs import configure_logging
from serving.gateway.main import create_app
from serving.gateway.settings import Settings
from serving.triton import launcher


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m serving.local",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-repository", type=Path, default=Path("build/model_repository/cpu"))
    p.add_argument("--host", default="127.0.0.1", help="gateway bind address")
    p.add_argument("--port", type=int, default=8080, help="gateway HTTP port")
    p.add_argument("--grpc-port", type=int, default=8081, help="gateway gRPC port (KServe v2); -1 = off")
    p.add_argument("--triton-http-port", type=int, default=8000)
    p.add_argument("--triton-grpc-port", type=int, default=8001)
    p.add_argument("--triton-metrics-port", type=int, default=8002)
    p.add_argument("--triton-log", type=Path, default=Path("build/triton.log"), help="Triton's log file")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)  # JSON lines, as the gateway logs (serving/gateway/logs.py)
    if not any(args.model_repository.glob("*/config.pbtxt")):
        print(
            f"error: no models in {args.model_repository}; run `make export` (or `make serve`) first",
            file=sys.stderr,
        )
        return 2
    # Explicit model control: every model loads at start, and the admin API (/admin) loads new
    # versions and unloads old ones at run time; the config's version_policy says how many serve.
    cfg = launcher.TritonConfig(
        args.model_repository,
        args.triton_http_port,
        args.triton_grpc_port,
        args.triton_metrics_port,
        model_control="explicit",
        load_models=["*"],
    )
    args.triton_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting tritonserver (log: {args.triton_log}) ...", flush=True)
    proc = launcher.start(cfg, args.triton_log)
    try:
        launcher.wait_ready(cfg, proc, timeout=180)
        print(
            f"triton ready: HTTP :{cfg.http_port}  gRPC :{cfg.grpc_port}  metrics :{cfg.metrics_port}",
            flush=True,
        )
        settings = Settings(
            triton_grpc_url=f"127.0.0.1:{cfg.grpc_port}",
            triton_http_url=f"127.0.0.1:{cfg.http_port}",
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port if args.grpc_port >= 0 else None,
        )
        print(
            f"gateway on http://{args.host}:{args.port}  (docs: /docs, metrics: /metrics)  Ctrl-C stops both",
            flush=True,
        )
        if settings.grpc_port is not None:
            print(f"gateway gRPC (KServe v2) on {args.host}:{settings.grpc_port}", flush=True)
        server = QuietServer(
            uvicorn.Config(
                create_app(settings),
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                access_log=settings.access_log,
                log_config=None,
                # uvicorn hands it to asyncio.wait_for: a float works, its annotation says int.
                timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
            )
        )
        server.run()  # handles SIGINT/SIGTERM itself and drains in-flight requests
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        print("stopping tritonserver ...", flush=True)
        launcher.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
