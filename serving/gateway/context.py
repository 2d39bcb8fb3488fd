"""The typed request context: what the middleware, the routes and the inference path share per request.

The guard middleware (guard.py) attaches one :class:`RequestContext` to every HTTP request, at
``scope["state"]["ctx"]``; everything else reads it with :func:`of` (routes, ``deps.infer``,
``versions``) or :func:`find` (the outer metrics middleware, which also sees requests the guard
never ran for, such as CORS preflights).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

from serving.gateway import errors

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane (<= 128 of ``[A-Za-z0-9._:-]``), else a new uuid4."""
    return value if value and _REQUEST_ID.fullmatch(value) else new_request_id()


@dataclass(slots=True)
class RequestContext:
    request_id: str
    deadline: float | None = None  # monotonic; None on exempt paths (the default timeout applies)
    model: str = ""  # the model the request is about: metrics and access-log label
    model_version: str = ""  # the version that answered last: X-Model-Version
    # model -> version that served this request, so its later calls (tiles) use the same version
    served: dict[str, str] = field(default_factory=dict)
    client_closed: bool = False  # cancelled on client disconnect: counted as 499, no response sent

    def time_left(self, default: float) -> float:
        """Seconds to the deadline (``default`` without one); 504 once it has passed, so no call is
        started that cannot finish."""
        if self.deadline is None:
            return default
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise errors.APIError(504, "deadline_exceeded", "the request's deadline passed before inference")
        return left


def attach(scope: Scope, request_id: str) -> RequestContext:
    ctx = RequestContext(request_id)
    scope.setdefault("state", {})["ctx"] = ctx
    return ctx


def find(scope: Scope) -> RequestContext | None:
    return (scope.get("state") or {}).get("ctx")


def of(conn: HTTPConnection) -> RequestContext:
    """The request's context; one is attached on first use where no guard ran (an app under test)."""
    return find(conn.scope) or attach(conn.scope, sane_request_id(conn.headers.get("x-request-id")))
