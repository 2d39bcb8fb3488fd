"""Structured logs (structlog): one JSON object per line, for the gateway's events and stdlib loggers.

The gateway's own events (one ``request`` line per request, written by the guard middleware) go
straight through structlog to stderr as orjson bytes: no stdlib ``logging`` machinery on the hot
path. Everything else that logs through ``logging`` (uvicorn, ``gateway.triton``) is rendered by
the same processors, so one log stream parses as JSON throughout. The request id is bound as a
context variable, so any line logged while serving a request carries it.

Never log payloads, prompts or API keys: lines carry the route, status, latency, model, request
id and a key *id* (a hash prefix), nothing a client sent as data.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog

_HANDLER_NAME = "gateway-structlog"


def _orjson_bytes(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def configure_logging(level: str = "info", as_json: bool = True) -> None:
    """Idempotent: safe to call once per app (tests create many apps in one process)."""
    lvl = logging.getLevelName(level.upper())
    lvl = lvl if isinstance(lvl, int) else logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_orjson_bytes),
            ],
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            wrapper_class=structlog.make_filtering_bound_logger(lvl),
            cache_logger_on_first_use=False,
        )
        renderer: Any = structlog.processors.JSONRenderer(
            serializer=lambda o, **_: json.dumps(o, default=str)
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer(colors=False)],
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(lvl),
            cache_logger_on_first_use=False,
        )
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(lvl)
    # uvicorn installs its own plain-text handlers; route its records through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
