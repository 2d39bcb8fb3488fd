"""Run the gateway with its settings applied to uvicorn: ``python -m serving.gateway``.

Same app as ``uvicorn --factory serving.gateway.main:create_app``, plus what only the server
can do: bind ``GATEWAY_HOST:GATEWAY_PORT``, keep uvicorn's access log off (the guard middleware
writes one structured line per request instead), and on SIGTERM stop accepting, then drain
in-flight requests for up to ``GATEWAY_GRACEFUL_SHUTDOWN_S`` before exiting 0 (uvicorn's own
default waits forever). The server itself is serving.harness.gateway_server.
"""

from __future__ import annotations

import argparse
import sys

from serving.gateway.settings import Settings
from serving.harness import gateway_server


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    p = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)
    args = p.parse_args(argv)
    gateway_server(settings, args.host, args.port).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
