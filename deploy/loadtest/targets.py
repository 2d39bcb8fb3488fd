"""What the engine calls: the gateway's task routes over HTTP, and Triton directly over gRPC.

Request bodies are built once and reused, so the generator spends its CPU on sending, not on
building multipart bodies or encoding PNGs per request. Three HTTP clients are offered:
``raw`` (default: ``rawhttp.py``, a minimal keep-alive HTTP/1.1 client, the least CPU per request;
streams and https go through aiohttp), ``aiohttp`` and ``httpx`` (see the bench report's
``client_overhead`` for what each costs per request). Pools are sized to the concurrency, so no request
waits for a connection inside the client.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.loadtest.engine import Outcome

ROUTES: dict[str, str] = {
    "classify": "/v1/classify",
    "segment": "/v1/segment",
    "super-resolve": "/v1/super-resolve",
    "anomaly": "/v1/anomaly",
    "denoise": "/v1/denoise",
    "generate": "/v1/generate",
    "chat": "/v1/chat/completions",
    "sample": "/v1/sample",
}
IMAGE_ROUTES = ("classify", "segment", "super-resolve", "anomaly", "denoise")
STREAM_ROUTES = ("generate", "chat")  # answered as Server-Sent Events, counted in tokens
# Default synthetic inputs per route: (side, channels). Any image works; these match the served models.
DEFAULT_IMAGE = {
    "classify": (32, 1),
    "segment": (64, 3),
    "super-resolve": (32, 3),
    "anomaly": (32, 1),
    "denoise": (64, 3),
}
CLIENTS = ("raw", "aiohttp", "httpx")


def synthetic_png(side: int, channels: int, seed: int = 0) -> bytes:
    """A deterministic smooth test image (a gradient with a blob), PNG-encoded."""
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / max(side - 1, 1)
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
    planes = [np.clip(255 * (0.5 * xx + 0.5 * blob * (c + 1) / channels), 0, 255) for c in range(channels)]
    arr = np.stack(planes, -1).astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart_body(
    data: bytes, filename: str = "image.png", ctype: str = "image/png", field_name: str = "file"
) -> tuple[bytes, str]:
    """A ready multipart/form-data body with one file field, and its Content-Type header."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class RequestSpec:
    """One prepared request: method POST, path with query, body bytes, headers; ``stream`` = SSE."""

    route: str
    path: str
    body: bytes
    headers: dict[str, str]
    stream: bool = False


def image_request(
    route: str, image: bytes | None = None, model: str | None = None, params: dict[str, Any] | None = None
) -> RequestSpec:
    if route not in IMAGE_ROUTES:
        raise ValueError(f"{route!r} is not an image route ({', '.join(IMAGE_ROUTES)})")
    if image is None:
        image = synthetic_png(*DEFAULT_IMAGE[route])
    body, ctype = multipart_body(image)
    query = dict(params or {})
    if model:
        query["model"] = model
    path = ROUTES[route] + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return RequestSpec(route, path, body, {"Content-Type": ctype})


def generate_request(
    prompt: str = "ROMEO:\n",
    max_new_tokens: int = 64,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RequestSpec:
    payload: dict[str, Any] = {
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "stream": True,
        **(extra or {}),
    }
    if model:
        payload["model"] = model
    return RequestSpec(
        "generate",
        ROUTES["generate"],
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "Accept": "text/event-stream"},
        stream=True,
    )


def chat_request(prompt: str = "ROMEO:\n", max_tokens: int = 64, model: str | None = None) -> RequestSpec:
    """A streamed OpenAI chat completion with usage in the last chunk (the count the SSE counter trusts)."""
    payload: dict[str, Any] = {
        "model": model or "gpt",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return RequestSpec(
        "chat",
        ROUTES["chat"],
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "Accept": "text/event-stream"},
        stream=True,
    )


def sample_request(n: int = 8, model: str | None = None) -> RequestSpec:
    """GAN samples as one PNG grid; no seed, so every request draws new latents as users' would."""
    payload: dict[str, Any] = {"n": n, **({"model": model} if model else {})}
    return RequestSpec(
        "sample", ROUTES["sample"], json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )


def build_request(
    route: str,
    image_path: Path | None = None,
    model: str | None = None,
    prompt: str = "ROMEO:\n",
    max_new_tokens: int = 64,
) -> RequestSpec:
    if route == "generate":
        return generate_request(prompt, max_new_tokens, model)
    if route == "chat":
        return chat_request(prompt, max_new_tokens, model)
    if route == "sample":
        return sample_request(model=model)
    return image_request(route, image_path.read_bytes() if image_path else None, model)


# --- Server-Sent Events ------------------------------------------------------------------------

_COUNT_KEYS = ("generated_tokens", "completion_tokens", "tokens_generated", "num_tokens", "n_tokens")


@dataclass
class SSECounter:
    """Counts tokens in a /v1/generate or chat-completions event stream, whatever the exact event shape.

    An OpenAI chunk counts the characters of ``choices[0].delta.content``; its last ``usage``, the total.
    A ``data:`` event with JSON ``token_ids`` counts their number; one with ``text``/``token``/
    ``delta`` counts its characters (the served models are character-level). A final event that
    states a total (``generated_tokens``, ``usage.completion_tokens``, ...) overrides the count.
    ``[DONE]`` and events without text count nothing. An ``error`` event marks the stream failed.
    """

    tokens: int = 0
    stated: int | None = None
    error: str | None = None
    first_token_at: float | None = None
    _event: str = field(default="", repr=False)

    def feed_line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line:
            self._event = ""
            return
        if line.startswith("event:"):
            self._event = line[6:].strip()
            return
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            obj = {"text": data}
        if not isinstance(obj, dict):
            obj = {"text": str(obj)}
        if self._event == "error" or "error" in obj:
            self.error = str(obj.get("error") or obj)
            return
        n = 0
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):  # an OpenAI chat chunk
            delta = choices[0].get("delta")
            obj = {**obj, "text": delta.get("content") or ""} if isinstance(delta, dict) else obj
        if isinstance(obj.get("token_ids"), list):
            n = len(obj["token_ids"])
        else:
            for key in ("text", "token", "delta"):
                if isinstance(obj.get(key), str):
                    n = len(obj[key])
                    break
        if n and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.tokens += n
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        for source in (obj, usage):
            for key in _COUNT_KEYS:
                if isinstance(source.get(key), int):
                    self.stated = int(source[key])

    @property
    def total(self) -> int:
        return self.stated if self.stated is not None else self.tokens


# --- HTTP targets --------------------------------------------------------------------------------


class HttpTarget:
    """POSTs one prepared request to ``base_url``; 2xx is success, the body is read in full."""

    def __init__(
        self,
        base_url: str,
        spec: RequestSpec,
        client: str = "raw",
        timeout_s: float = 60.0,
        name: str | None = None,
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}")
        if client == "raw" and (spec.stream or not base_url.startswith("http://")):
            client = "aiohttp"  # the raw client reads whole responses over plain HTTP only
        self.base_url = base_url.rstrip("/")
        self.spec, self.client, self.timeout_s = spec, client, timeout_s
        self.name = name or spec.route
        self._session: Any = None

    async def open(self, pool_size: int) -> None:
        if self._session is not None:
            return
        if self.client == "raw":
            from deploy.loadtest.rawhttp import RawHttpClient

            self._session = RawHttpClient(
                self.base_url, self.spec.path, self.spec.body, self.spec.headers, self.timeout_s
            )
        elif self.client == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=pool_size, ttl_dns_cache=None)
            self._session = aiohttp.ClientSession(
                self.base_url,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,
            )
        else:
            import httpx

            limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
            self._session = httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=self.timeout_s)

    async def close(self) -> None:
        if self._session is not None:
            await (self._session.aclose() if self.client == "httpx" else self._session.close())
            self._session = None

    async def call(self) -> Outcome:
        spec = self.spec
        if self.client == "raw":
            status = await self._session.post()
            return Outcome(str(status), 200 <= status < 300)
        if self.client == "aiohttp":
            async with self._session.post(spec.path, data=spec.body, headers=spec.headers) as resp:
                if spec.stream and resp.status < 300:
                    return await self._stream_aiohttp(resp)
                await resp.read()
                return Outcome(str(resp.status), 200 <= resp.status < 300)
        if spec.stream:
            async with self._session.stream(
                "POST", spec.path, content=spec.body, headers=spec.headers
            ) as resp:
                if resp.status_code >= 300:
                    await resp.aread()
                    return Outcome(str(resp.status_code), False)
                return await self._stream_lines(resp.aiter_lines())
        resp = await self._session.post(spec.path, content=spec.body, headers=spec.headers)
        return Outcome(str(resp.status_code), 200 <= resp.status_code < 300)

    async def _stream_aiohttp(self, resp: Any) -> Outcome:
        async def lines() -> Any:
            async for raw in resp.content:
                yield raw.decode("utf-8", "replace")

        return await self._stream_lines(lines())

    @staticmethod
    async def _stream_lines(lines: Any) -> Outcome:
        start = time.perf_counter()
        counter = SSECounter()
        async for line in lines:
            counter.feed_line(line)
        ttft = None if counter.first_token_at is None else counter.first_token_at - start
        if counter.error is not None:
            return Outcome("stream_error", False, ttft, counter.total)
        return Outcome("200", counter.total > 0, ttft, counter.total)


# --- Triton over gRPC ----------------------------------------------------------------------------

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]


class TritonGrpcTarget:
    """ModelInfer on Triton directly, with the request serialised once and the answer left as bytes.

    The generic gRPC method with no (de)serialiser skips protobuf work per call: the cheapest
    client Python has, so the measurement is about Triton, not about the load generator.
    """

    def __init__(
        self,
        grpc_url: str,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        timeout_s: float = 60.0,
        name: str | None = None,
    ) -> None:
        from serving.gateway.triton import build_request as build_infer

        self.url, self.model, self.timeout_s = grpc_url, model, timeout_s
        self.name = name or f"triton:{model}"
        self.payload = build_infer(model, inputs, outputs).SerializeToString()
        self._channel: Any = None
        self._infer: Any = None

    async def open(self, pool_size: int) -> None:
        import grpc

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.url, options=GRPC_OPTIONS)
            self._infer = self._channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(self) -> Outcome:
        import grpc

        try:
            await self._infer(self.payload, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            return Outcome(f"grpc:{exc.code().name}", False)
        return Outcome("OK", True)
