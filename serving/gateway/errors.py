"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Two doors speak another protocol's shape, the one its clients parse: the OpenAI routes
(``OPENAI_PATHS``) and the KServe v2 door (every path under ``/v2``), which answers
``{"error": "<message>"}`` as Triton does, with 400 where the task routes say 422 (KServe has no
422: Triton answers 400 for a request it cannot use), see :func:`kserve_error`.

4xx means the caller can fix the request; 5xx means a bug or an upstream fault; Triton being
unreachable is a 503 with Retry-After so clients and load balancers back off. An unhandled
exception is answered (500, with the request id) by the guard middleware, in the door's form.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.details = (
            status,
            code,
            message,
            headers,
            details,
        )


def bad_request(code: str, message: str) -> APIError:
    return APIError(400, code, message)


def unprocessable(code: str, message: str) -> APIError:
    return APIError(422, code, message)


def too_large(message: str) -> APIError:
    return APIError(413, "payload_too_large", message)


def unsupported_media(message: str) -> APIError:
    return APIError(415, "unsupported_media_type", message)


def not_found(code: str, message: str) -> APIError:
    return APIError(404, code, message)


def upstream_unavailable(message: str, retry_after: int = 2) -> APIError:
    return APIError(503, "upstream_unavailable", message, headers={"Retry-After": str(retry_after)})


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


# Routes that answer errors in OpenAI's shape (what the openai SDK parses into its exceptions).
OPENAI_PATHS = frozenset({"/v1/chat/completions"})
# OpenAI-shaped routes that keep our statuses for a request they cannot take (422, 413): embeddings.
OPENAI_422_PATHS = frozenset({"/v1/embeddings"})


class OpenAIError(APIError):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``, OpenAI's shape."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(status, code, message, headers)
        self.param = param

    @property
    def type(self) -> str:
        return "invalid_request_error" if self.status < 500 else "server_error"


def openai_body(exc: OpenAIError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def to_openai(exc: APIError, param: str | None = None) -> OpenAIError:
    """The same failure for an OpenAI route: OpenAI answers a request it cannot take with 400, not 422."""
    if isinstance(exc, OpenAIError):
        return exc
    status = 400 if exc.status == 422 else exc.status
    return OpenAIError(status, exc.code, exc.message, param, exc.headers)


def is_kserve(path: str) -> bool:
    """A path of the KServe v2 HTTP door (``routes/kserve_http.py``)."""
    return path == "/v2" or path.startswith("/v2/")


def kserve_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """KServe v2's error form, ``{"error": "<message>"}``: what ``tritonclient.http`` reads into
    ``InferenceServerException`` (our task-route shape makes it raise ``<exception str() failed>``)."""
    return JSONResponse({"error": message}, status_code=400 if status == 422 else status, headers=headers)


def kserve_body(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """The status and body :func:`kserve_error` answers, for the ASGI guard (no Response there)."""
    return (400 if status == 422 else status), {"error": message}


def _where(loc: list) -> str:
    return ".".join(str(p) for p in loc if p != "body")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        if is_kserve(request.url.path):
            return kserve_error(exc.status, exc.message, exc.headers)
        if isinstance(exc, OpenAIError):
            return JSONResponse(openai_body(exc), status_code=exc.status, headers=exc.headers)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = _where(first["loc"]) or "request"
        if is_kserve(request.url.path):
            return kserve_error(400, f"{where}: {first['msg']}")
        if request.url.path in OPENAI_PATHS:
            err = OpenAIError(400, "invalid_parameter", f"{where}: {first['msg']}", where)
            return JSONResponse(openai_body(err), status_code=400)
        if request.url.path in OPENAI_422_PATHS:
            err = OpenAIError(422, "invalid_parameter", f"{where}: {first['msg']}", where)
            return JSONResponse(openai_body(err), status_code=422)
        return JSONResponse(
            error_body("invalid_parameter", f"{where}: {first['msg']}", details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if is_kserve(request.url.path):
            return kserve_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))
        headers = getattr(exc, "headers", None)
        if isinstance(cause, UnicodeDecodeError):  # FastAPI's body parsing: a 400 that names nothing
            status, code = 422, "invalid_utf8"
            message = f"request body is not valid UTF-8 (byte {cause.start})"
        else:
            status, message = exc.status_code, str(exc.detail)
            code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
                status, "http_error"
            )
        path = request.url.path
        if path in OPENAI_PATHS or path in OPENAI_422_PATHS:  # what the openai SDK parses
            err = OpenAIError(400 if status == 422 and path in OPENAI_PATHS else status, code, message)
            return JSONResponse(openai_body(err), status_code=err.status, headers=headers)
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)
