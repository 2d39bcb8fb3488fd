"""A minimal HTTP/1.1 keep-alive client for the load generator: one prepared request, many times.

Why not only aiohttp: on a 2-core box the load generator shares the cores with the servers it
measures, so its CPU per request is taken from them. A request here is one ``transport.write``
of bytes built once, and a response is parsed just far enough to know its status and where it
ends (Content-Length or chunked). The bench measured the client's CPU per request (report
``client_overhead``): see the numbers there; aiohttp stays the client for streams (SSE).

Not a general client: no redirects, no TLS, no compression, no cookies.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc or 'by the server'}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                parsed = _parse(self.buf)
            except ValueError as exc:
                self.waiter.set_exception(exc)
                return
            if parsed is not None:
                status, used, keep_alive = parsed
                del self.buf[:used]
                if not keep_alive:
                    self.closed = True
                self.waiter.set_result((status, used))

    async def request(self, payload: bytes, loop: asyncio.AbstractEventLoop) -> int:
        assert self.transport is not None
        if self.closed:
            raise ConnectionResetError("connection closed by the server")
        self.waiter = loop.create_future()
        self.transport.write(payload)
        status, _ = await self.waiter
        self.waiter = None
        return status


def _parse(buf: bytearray) -> tuple[int, int, bool] | None:
    """(status, bytes used, keep-alive) once ``buf`` holds a whole response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {head[0]!r}")
    status = int(parts[1])
    length, chunked, keep_alive = None, False, parts[0] == "HTTP/1.1"
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection":
            keep_alive = value.strip().lower() == "keep-alive"
    start = end + 4
    if chunked:
        pos = start
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", eol)
                return None if trailer_end < 0 else (status, trailer_end + 4, keep_alive)
            pos = eol + 2 + size + 2
            if pos > len(buf):
                return None
    if length is None:
        length = 0 if status in (204, 304) or 100 <= status < 200 else -1
    if length < 0:
        raise ValueError(
            "response without Content-Length or chunked encoding (read-to-close is not supported)"
        )
    return (status, start + length, keep_alive) if len(buf) >= start + length else None


class RawHttpClient:
    """POSTs one prepared request over a pool of keep-alive connections."""

    def __init__(
        self, base_url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http":
            raise ValueError("the raw client speaks plain http:// only; use --client aiohttp for https")
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        prefix = url.path.rstrip("/")
        lines = [
            f"POST {prefix}{path} HTTP/1.1",
            f"Host: {url.netloc}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.timeout_s = timeout_s
        self.idle: list[_Connection] = []
        self.all: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self.all.add(conn)
        return conn

    async def post(self) -> int:
        loop = asyncio.get_running_loop()
        while True:
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await asyncio.wait_for(self._connect(), self.timeout_s)
            try:
                status = await asyncio.wait_for(conn.request(self.payload, loop), self.timeout_s)
                break
            except ConnectionError:
                # A kept-alive connection the server closed while idle (uvicorn: after 5 s) never
                # saw the request: try again on another one, as HTTP clients do.
                self._drop(conn)
                if not reused:
                    raise
            except BaseException:
                self._drop(conn)
                raise
        if conn.closed:
            self._drop(conn)
        else:
            self.idle.append(conn)
        return status

    def _drop(self, conn: _Connection) -> None:
        self.all.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        for conn in list(self.all):
            self._drop(conn)
        self.idle.clear()
        await asyncio.sleep(0)  # one loop turn: the transports finish closing
