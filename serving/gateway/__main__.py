"""Run the gateway with its settings applied to uvicorn: ``python -m serving.gateway``.

Same app as ``uvicorn --factory serving.gateway.main:create_app``, plus what only the server
can do: bind ``GATEWAY_HOST:GATEWAY_PORT``, keep uvicorn's access log off (the guard middleware
writes one structured line per request instead), and on SIGTERM stop accepting, then drain
in-flight requests for up to ``GATEWAY_GRACEFUL_SHUTDOWN_S`` before exiting (uvicorn's own
default waits forever).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator

import uvicorn

from serving.gateway.main import create_app
from serving.gateway.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    p = argparse.ArgumentParser(prog="python -m serving.gateway", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)
    args = p.parse_args(argv)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log=settings.access_log,
        log_level=settings.log_level,
        log_config=None,  # logging is ours (logs.py)
        # uvicorn hands it to asyncio.wait_for: a float works, its annotation says int.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
    )
    QuietServer(config).run()
    return 0


class QuietServer(uvicorn.Server):
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


if __name__ == "__main__":
    sys.exit(main())
