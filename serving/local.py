"""The embedded stack: a real tritonserver (CPU, from the nvidia-pytriton wheel) plus the gateway.

    python -m serving.local --model-repository build/model_repository/cpu

Runs in the foreground (serving/harness.py: Triton as a child, the gateway in this process).
Ctrl-C (or SIGTERM) stops the gateway, then Triton; Triton is also tied to this process with
PR_SET_PDEATHSIG, so even a SIGKILL here leaves no orphan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import harness
from serving.gateway.logs import configure_logging
from serving.gateway.settings import Settings


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
    print(f"starting tritonserver (log: {args.triton_log}) ...", flush=True)
    # Explicit model control: every model loads at start, and the admin API (/admin) loads new
    # versions and unloads old ones at run time; the config's version_policy says how many serve.
    try:
        triton = harness.start_triton(
            args.model_repository,
            args.triton_log,
            ports=(args.triton_http_port, args.triton_grpc_port, args.triton_metrics_port),
            model_control="explicit",
            load_models=["*"],
            timeout=180,
        )
    except KeyboardInterrupt:  # the harness has stopped Triton
        return 130
    cfg = triton.cfg
    try:
        print(
            f"triton ready: HTTP :{cfg.http_port}  gRPC :{cfg.grpc_port}  metrics :{cfg.metrics_port}",
            flush=True,
        )
        settings = Settings(
            triton_grpc_url=triton.grpc_url,
            triton_http_url=triton.http_url,
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
        # handles SIGINT/SIGTERM itself and drains in-flight requests
        harness.gateway_server(settings, args.host, args.port, log_level=args.log_level).run()
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        print("stopping tritonserver ...", flush=True)
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
