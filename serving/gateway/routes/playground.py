"""GET /playground: a web page to try every served model, from static files shipped in the package.

The page (serving/gateway/static/playground) is plain HTML, CSS and ES modules; it talks to the public
API only, with the same routes, headers and errors a user's code meets. Nothing is loaded from
another host (the Content-Security-Policy below says so to the browser too), so it works offline
and inside the container image. The guard lets these paths through without an API key: the page
itself asks for the key and sends it with each API call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from serving.gateway import errors

router = APIRouter(tags=["playground"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static" / "playground"
PREFIX = "/playground"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# 'self' only: a stray reference to another host fails loudly in the browser instead of leaking.
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def is_playground(path: str) -> bool:
    """Static playground paths: exempt from API keys and rate limits (guard.py)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def _files() -> dict[str, Path]:
    # A fixed table of what ships, read once: a request path can only ever name one of these files.
    return {
        p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file() and p.suffix in _TYPES
    }


FILES = _files()


def _serve(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise errors.not_found("not_found", f"no playground file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)


@router.get(PREFIX)
@router.get(PREFIX + "/")
async def page() -> FileResponse:
    return _serve("index.html")


@router.get(PREFIX + "/{name:path}")
async def asset(name: str) -> FileResponse:
    return _serve(name)
