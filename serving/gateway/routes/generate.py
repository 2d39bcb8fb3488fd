"""Text generation: POST /v1/generate (JSON or Server-Sent Events) and OpenAI's POST /v1/completions.

The decode loop runs inside Triton (serving/triton/models/generator.py, a decoupled Python-backend
model with continuous batching); the gateway validates, opens one ModelStreamInfer call and
relays each chunk as it arrives. When the client goes away, the SSE generator is cancelled, its
``finally`` cancels the gRPC call, and Triton drops the sequence at its next decode step.

Memory (issue 18): every sequence holds a decode row in Triton (GPT: a KV cache of the model's
``context_length`` positions, ``state_bytes_per_sequence`` in its config; LSTM: its recurrent
state), so sequences are capped twice: the generator decodes at most ``max_active`` at once
(fewer when ``max_state_bytes`` says so) and queues at most ``max_pending``, and this gateway
process streams at most ``max_generation_streams`` sequences at once (every text route together).
Over either cap the request is answered 429 with ``Retry-After`` before any work (a generator
queue that fills while a stream already started ends that stream with an in-band error event).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from serving.gateway import context, errors, validation
from serving.gateway.deps import get_catalog, request_id, version_for
from serving.gateway.inference import InferenceService
from serving.gateway.openapi import task_extra
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import InferResult, ModelCatalog, ModelInfo, build_request
from serving.gateway.validation import JsonInt, OptionalJsonInt
from serving.textgen import MAX_STOP_CHARS, MAX_STOPS

router = APIRouter(tags=["text generation"])

DEFAULT_CAP = 512


class GenerateRequest(BaseModel):
    # strict: JSON types as documented (no "1" for 1, no false for 0); ints are still fine for floats.
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(
        description="text to continue (character-level Shakespeare models)",
        examples=["ROMEO:"],
        json_schema_extra={"minLength": 1},  # validation.check_prompt, with our error codes
    )
    max_new_tokens: JsonInt = Field(
        64, ge=1, description="characters to generate (capped per model, see /v1/models)"
    )
    temperature: float = Field(0.8, ge=0.0, le=5.0, description="0 = greedy, deterministic")
    top_k: JsonInt = Field(0, ge=0, le=1000, description="keep the k most likely tokens; 0 = off")
    # float32 inside Triton: a positive double below ~1e-38 would arrive as 0, which is out of range.
    top_p: float = Field(1.0, ge=1e-6, le=1.0, description="nucleus sampling mass; 1 = off")
    seed: OptionalJsonInt = Field(None, ge=0, le=2**62, description="fixed seed: the same text every time")
    stop: list[str] | str | None = Field(None, description="up to 8 stop strings; generation ends before one")
    model: str | None = Field(None, description="lstm or gpt (any served text-generation model); default gpt")
    stream: bool = Field(False, strict=True, description="answer as Server-Sent Events, chunk by chunk")
    version: str | None = Field(None, pattern=r"^[1-9][0-9]{0,8}$", description="pin a model version")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    model: str
    model_version: str
    text: str
    finish_reason: str
    usage: Usage


class CompletionRequest(BaseModel):
    """OpenAI's legacy completions request; unknown fields are accepted and ignored, like OpenAI's SDKs
    expect."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(description="served model: lstm or gpt")
    prompt: str | list[str] = Field(
        description="one prompt (a one-element list is accepted too)",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 1},
            ]
        },
    )
    max_tokens: JsonInt = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, ge=1e-6, le=1.0)
    top_k: JsonInt = Field(0, ge=0, le=1000, description="extension: top-k sampling")
    n: JsonInt = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = Field(False, strict=True)
    stop: str | list[str] | None = None
    seed: OptionalJsonInt = Field(None, ge=0, le=2**62)
    echo: bool = Field(False, strict=True)
    user: str | None = None


class StreamSlots:
    """Text sequences this gateway process streams at once (a counter: no queue, no memory growth)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def reserve(self, n: int = 1) -> Reservation:
        """``n`` slots, or the 429 (with Retry-After) when they would exceed the limit."""
        if self.used + n > self.limit:
            raise errors.APIError(
                429,
                "too_many_streams",
                f"{self.used} text sequences are being generated (the limit is {self.limit}); retry shortly",
                headers={"Retry-After": "1"},
            )
        self.used += n
        return Reservation(self, n)


class Reservation:
    def __init__(self, slots: StreamSlots, n: int) -> None:
        self.slots, self.n = slots, n

    def release(self) -> None:  # idempotent: the stream's ``finally`` and the response's background
        self.slots.used -= self.n
        self.n = 0


def reserve_streams(request: Request, settings: Settings, n: int = 1) -> Reservation:
    slots = getattr(request.app.state, "stream_slots", None)
    if slots is None:  # one per app, sized by its settings
        slots = request.app.state.stream_slots = StreamSlots(settings.max_generation_streams)
    return cast(StreamSlots, slots).reserve(n)


async def released(slot: Reservation, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``events``, then the slots go back (also when the client leaves and the stream is cancelled)."""
    try:
        async for event in events:
            yield event
    finally:
        slot.release()


def sse_response(slot: Reservation, events: AsyncIterator[Any], **kwargs: Any) -> EventSourceResponse:
    """An SSE response that gives its stream slots back however it ends (even when never started)."""
    return EventSourceResponse(
        released(slot, events), ping=15, background=BackgroundTask(slot.release), **kwargs
    )


def _stops(stop: str | list[str] | None) -> list[str]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    items = [s for s in items if s]
    if len(items) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in items):
        raise errors.unprocessable(
            "invalid_parameter", f"stop: at most {MAX_STOPS} strings of {MAX_STOP_CHARS} characters"
        )
    return items


async def pick_model(catalog: ModelCatalog, name: str | None) -> ModelInfo:
    if name:
        return await catalog.for_task("text_generation", name)
    await catalog.for_task("text_generation")
    served = sorted(m for m, info in catalog.models.items() if info.task == "text_generation")
    return catalog.models["gpt" if "gpt" in served else served[0]]


def triton_request(
    info: ModelInfo,
    prompt: str,
    max_new: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    stop: list[str],
    req_id: str,
    version: str,
) -> Any:
    inputs = {
        "PROMPT": np.array([prompt.encode("utf-8")], dtype=object),
        "MAX_NEW_TOKENS": np.array([max_new], dtype=np.int32),
        "TEMPERATURE": np.array([temperature], dtype=np.float32),
        "TOP_K": np.array([top_k], dtype=np.int32),
        "TOP_P": np.array([top_p], dtype=np.float32),
        "SEED": np.array([-1 if seed is None else seed], dtype=np.int64),
        "STOP": np.array([s.encode("utf-8") for s in stop] or [b""], dtype=object),
    }
    return build_request(info.name, inputs, version=version, request_id=req_id)


def new_token_cap(info: ModelInfo) -> int:
    return info.param_int("max_new_tokens", DEFAULT_CAP) or DEFAULT_CAP


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A property's schema and its ``anyOf`` branches, with array items: where bounds go."""
    out = []
    for b in [schema, *schema.get("anyOf", [])]:
        out += [b, *([b["items"]] if isinstance(b.get("items"), dict) else [])]
    return out


def document_generation(body: dict[str, Any], models: list[ModelInfo], settings: Settings) -> None:
    """Token caps and prompt bounds in the document, from the served text models and the settings."""
    props = body.get("properties", {})
    cap = min(new_token_cap(m) for m in models)  # one cap for all: a per-model cap is not a schema
    for key in ("max_new_tokens", "max_tokens", "max_completion_tokens"):
        for b in _branches(props.get(key, {})):
            if b.get("type") == "integer":
                b["maximum"] = cap
    if "max_completion_tokens" in props:  # chat: it wins, and max_tokens is then not looked at
        free = [b for b in _branches(props["max_tokens"]) if b.get("type") == "integer"]
        for b in free:
            b.pop("maximum", None)
        body["anyOf"] = [
            {
                "required": ["max_completion_tokens"],
                "properties": {"max_completion_tokens": {"type": "integer"}},
            },
            {
                "properties": {
                    "max_tokens": {"anyOf": [{"type": "integer", "maximum": cap}, {"type": "null"}]}
                }
            },
        ]
    for b in _branches(props.get("prompt", {})):
        if b.get("type") == "string":
            b["pattern"], b["maxLength"] = validation.PROMPT_PATTERN, settings.max_prompt_chars


def _checked(info: ModelInfo, settings: Settings, prompt: str, max_new: int) -> str:
    prompt = validation.check_prompt(prompt, settings.max_prompt_chars)
    cap = new_token_cap(info)
    if max_new > cap:
        raise errors.unprocessable(
            "invalid_parameter", f"max_new_tokens={max_new} is above this model's cap of {cap}"
        )
    return prompt


def _chunk(result: InferResult) -> tuple[str, int, str]:
    out = result.outputs
    text = b"".join(v if isinstance(v, bytes) else bytes(v) for v in out["TEXT"].reshape(-1)).decode(
        "utf-8", "replace"
    )
    n = int(out["TOKEN_IDS"].size) if "TOKEN_IDS" in out else len(text)
    reason = out["FINISH_REASON"].reshape(-1)[0] if "FINISH_REASON" in out else b""
    return text, n, reason.decode() if isinstance(reason, bytes) else str(reason)


async def _chunks(request: Request, info: ModelInfo, req: Any) -> AsyncIterator[tuple[str, int, str, str]]:
    """(text, tokens, finish_reason, version) per streamed response from Triton."""
    service: InferenceService = request.app.state.inference
    async for result in service.stream_text(context.of(request), req):
        text, n, reason = _chunk(result)
        yield text, n, reason, result.model_version or req.model_version or info.version


async def collect(request: Request, info: ModelInfo, req: Any, prefix: str = "") -> tuple[str, int, str, str]:
    """One whole answer (text, tokens, finish_reason, version): what the routes that do not stream send."""
    parts, tokens, reason, served = [prefix], 0, "", req.model_version or info.version
    async for text, n, r, v in _chunks(request, info, req):
        parts.append(text)
        tokens, reason, served = tokens + n, r or reason, v
    return "".join(parts), tokens, reason or "length", served


def _version(request: Request, info: ModelInfo, pinned: str | None) -> str:
    return pinned or version_for(request, info)


@router.post(
    "/v1/generate",
    openapi_extra=task_extra("text_generation"),
    response_model=GenerateResponse,
    summary="Generate text; `stream: true` answers as Server-Sent Events",
    responses={
        200: {"content": {"text/event-stream": {}}},
        422: {"description": "invalid prompt or parameter"},
        503: {"description": "Triton down"},
    },
)
async def generate(
    body: GenerateRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Any:
    info = await pick_model(catalog, body.model)
    prompt = _checked(info, settings, body.prompt, body.max_new_tokens)
    version = _version(request, info, body.version)
    req = triton_request(
        info,
        prompt,
        body.max_new_tokens,
        body.temperature,
        body.top_k,
        body.top_p,
        body.seed,
        _stops(body.stop),
        request_id(request),
        version,
    )
    slot = reserve_streams(request, settings)
    if body.stream:
        return sse_response(
            slot, _sse_generate(request, info, req, len(prompt)), headers={"X-Model": info.name}
        )
    try:
        text, tokens, reason, served = await collect(request, info, req)
    finally:
        slot.release()
    InferenceService.served(context.of(request), info.name, served)
    return GenerateResponse(
        model=info.name,
        model_version=served,
        text=text,
        finish_reason=reason,
        usage=Usage(prompt_tokens=len(prompt), completion_tokens=tokens, total_tokens=len(prompt) + tokens),
    )


async def _sse_generate(
    request: Request, info: ModelInfo, req: Any, prompt_tokens: int
) -> AsyncIterator[dict[str, str]]:
    tokens, served = 0, info.version
    try:
        async for text, n, reason, version in _chunks(request, info, req):
            tokens += n
            served = version
            if text:
                yield {"data": orjson.dumps({"text": text}).decode()}
            if reason:
                yield {
                    "event": "done",
                    "data": orjson.dumps(
                        {
                            "finish_reason": reason,
                            "model": info.name,
                            "model_version": served,
                            "usage": {
                                "prompt_tokens": prompt_tokens,
                                "completion_tokens": tokens,
                                "total_tokens": prompt_tokens + tokens,
                            },
                        }
                    ).decode(),
                }
    except errors.APIError as exc:  # headers are gone already: report in-band, then end the stream
        yield {"event": "error", "data": orjson.dumps(errors.error_body(exc.code, exc.message)).decode()}


@router.post(
    "/v1/completions",
    openapi_extra=task_extra("text_generation"),
    summary="OpenAI-compatible completions (streaming and not)",
    responses={200: {"content": {"text/event-stream": {}}}, 422: {"description": "invalid"}},
)
async def completions(
    body: CompletionRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Any:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise errors.unprocessable("invalid_parameter", "prompt: exactly one prompt is supported per request")
    info = await pick_model(catalog, body.model)
    prompt = _checked(info, settings, prompts[0], body.max_tokens)
    req = triton_request(
        info,
        prompt,
        body.max_tokens,
        body.temperature,
        body.top_k,
        body.top_p,
        body.seed,
        _stops(body.stop),
        request_id(request),
        _version(request, info, None),
    )
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": info.name}
    slot = reserve_streams(request, settings)
    if body.stream:
        return sse_response(slot, _sse_completions(request, info, req, head, prompt if body.echo else ""))
    try:
        text, tokens, reason, _ = await collect(request, info, req, prompt if body.echo else "")
    finally:
        slot.release()
    return {
        **head,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}],
        "usage": {
            "prompt_tokens": len(prompt),
            "completion_tokens": tokens,
            "total_tokens": len(prompt) + tokens,
        },
    }


async def _sse_completions(
    request: Request, info: ModelInfo, req: Any, head: dict[str, Any], echo: str
) -> AsyncIterator[str]:
    def event(text: str, reason: str | None) -> str:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}
        return orjson.dumps({**head, "choices": [choice]}).decode()

    try:
        if echo:
            yield event(echo, None)
        async for text, _, reason, _ in _chunks(request, info, req):
            if text or reason:
                yield event(text, reason or None)
    except errors.APIError as exc:
        yield orjson.dumps(errors.error_body(exc.code, exc.message)).decode()
    yield "[DONE]"
