"""OpenAI's POST /v1/chat/completions over the text generators (gpt, lstm), streaming and not.

Messages become one prompt through the chat template stored with the model (the ``chat_template``
parameter of its config.pbtxt, written by the exporter; ``serving.textgen.DEFAULT_CHAT_TEMPLATE``
for a repository exported before there was one). Each of the ``n`` choices is its own Triton
stream (seed + index when seeded), so choices decode concurrently in the generator's continuous
batch. Errors are answered in OpenAI's shape, the one the openai SDK parses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.gateway import errors, validation
from serving.gateway.deps import get_catalog, request_id
from serving.gateway.openapi import REFINERS, task_extra
from serving.gateway.routes.generate import (
    _checked,
    _chunks,
    _version,
    collect,
    document_generation,
    pick_model,
    reserve_streams,
    sse_response,
    triton_request,
)
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, ModelInfo
from serving.gateway.validation import JsonInt, OptionalJsonInt
from serving.textgen import (
    DEFAULT_CHAT_TEMPLATE,
    MAX_STOP_CHARS,
    MAX_STOPS,
    check_chat_template,
    render_chat,
)

router = APIRouter(tags=["text generation"])

MAX_CHOICES = 4


# The one content part these models take (_messages joins them; others are refused).
TEXT_PART: dict[str, Any] = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # name, tool_calls, ...: accepted, unused

    role: str = Field(description="one of the model's chat template turns (system, user, assistant)")
    # a string, or OpenAI's content parts of type "text" (joined); None is an empty message
    content: str | list[dict[str, Any]] | None = Field(
        None,
        json_schema_extra={
            "anyOf": [{"type": "string"}, {"type": "array", "items": TEXT_PART}, {"type": "null"}]
        },
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request; unknown fields are accepted and ignored, as OpenAI's SDKs expect."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(description="served text-generation model: lstm or gpt")
    messages: list[ChatMessage] = Field(
        description="the conversation; roles system, user, assistant",
        json_schema_extra={"minItems": 1},  # checked in the route, in OpenAI's error form
    )
    max_tokens: OptionalJsonInt = Field(None, ge=1, description="characters to generate (default 64)")
    max_completion_tokens: OptionalJsonInt = Field(None, ge=1, description="newer name of max_tokens; wins")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=1e-6, le=1.0)
    top_k: JsonInt = Field(0, ge=0, le=1000, description="extension: top-k sampling")
    n: JsonInt = Field(1, ge=1, le=MAX_CHOICES, description="choices, each its own stream (seed + index)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: OptionalJsonInt = Field(None, ge=0, le=2**62 - MAX_CHOICES)
    user: str | None = None


def document_roles(
    op: dict[str, Any],
    body: dict[str, Any] | None,
    schemas: dict[str, Any],
    models: list[ModelInfo],
    settings: Settings,
) -> None:
    """Text routes' document: generate's bounds; a message's ``role`` is a turn of every served
    model's template, its content free of what check_prompt refuses."""
    if body is None or not models:
        return
    document_generation(body, models, settings)
    if "messages" not in body.get("properties", {}):
        return
    message = schemas["ChatMessage"]["properties"]
    for b in message["content"].get("anyOf", []):
        if b.get("type") == "array":
            b = b["items"]["properties"]["text"]
        if b.get("type") == "string":
            b["pattern"] = validation.PROMPT_PATTERN
    try:
        roles = set.intersection(*(set(chat_template(m)["turns"]) for m in models))
    except errors.APIError:
        return  # a broken template: 500 bad_chat_template, documented as any string
    schemas["ChatMessage"]["properties"]["role"]["enum"] = sorted(roles)


REFINERS["text_generation"] = document_roles  # all three text routes (chat imports generate)


def chat_template(info: ModelInfo) -> dict:
    """The model's template from its config; the default when it has none."""
    try:
        return check_chat_template(info.param_json("chat_template", DEFAULT_CHAT_TEMPLATE))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a broken repository, not the caller
        raise errors.APIError(500, "bad_chat_template", f"model {info.name!r}: {exc}") from None


def _messages(body: ChatCompletionRequest) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            if not all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise errors.OpenAIError(
                    400,
                    "invalid_parameter",
                    "only text content parts are supported by these models",
                    f"messages.{i}.content",
                )
            content = "".join(p["text"] for p in content)
        out.append({"role": m.role, "content": content or ""})
    return out


def _stops(request_stop: str | list[str] | None, template: dict) -> list[str]:
    items = [request_stop] if isinstance(request_stop, str) else list(request_stop or [])
    items = list(dict.fromkeys([s for s in items if s] + list(template.get("stop", []))))
    if len(items) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in items):
        raise errors.OpenAIError(
            400,
            "invalid_parameter",
            f"stop: at most {MAX_STOPS} strings of {MAX_STOP_CHARS} characters, the template's included",
            "stop",
        )
    return items


@router.post(
    "/v1/chat/completions",
    openapi_extra=task_extra("text_generation"),
    summary="OpenAI-compatible chat completions (streaming and not)",
    responses={
        200: {"content": {"text/event-stream": {}}},
        400: {"description": "invalid request (OpenAI error shape)"},
        404: {"description": "unknown model (OpenAI error shape)"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Any:
    try:
        return await _chat(body, request, catalog, settings)
    except errors.APIError as exc:
        raise errors.to_openai(
            exc, "model" if exc.code in ("model_not_found", "wrong_task") else None
        ) from None


async def _chat(
    body: ChatCompletionRequest, request: Request, catalog: ModelCatalog, settings: Settings
) -> Any:
    info = await pick_model(catalog, body.model)
    template = chat_template(info)
    try:
        prompt = render_chat(_messages(body), template)
    except ValueError as exc:
        raise errors.OpenAIError(400, "invalid_parameter", str(exc), "messages") from None
    max_new = body.max_completion_tokens or body.max_tokens or 64
    prompt = _checked(info, settings, prompt, max_new)
    stops = _stops(body.stop, template)
    version = _version(request, info, None)
    rid = request_id(request)
    reqs = [
        triton_request(
            info,
            prompt,
            max_new,
            body.temperature,
            body.top_k,
            body.top_p,
            None if body.seed is None else body.seed + i,
            stops,
            f"{rid}-{i}" if body.n > 1 else rid,
            version,
        )
        for i in range(body.n)
    ]
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {
        "id": cid,
        "created": created,
        "model": info.name,
        "system_fingerprint": f"{info.name}-v{version or info.version}",
    }
    slot = reserve_streams(request, settings, len(reqs))  # one slot per choice: each is a sequence
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(slot, _sse(request, info, reqs, head, len(prompt), usage))
    try:
        results = await asyncio.gather(*(collect(request, info, r) for r in reqs))
    finally:
        slot.release()
    completion = sum(n for _, n, _, _ in results)
    return {
        **head,
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, _, reason, _) in enumerate(results)
        ],
        "usage": _usage(len(prompt), completion),
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _merged(request: Request, info: ModelInfo, reqs: list[Any]) -> AsyncIterator[tuple[int, Any]]:
    """(choice index, (text, tokens, reason, version)) from all streams as they arrive; a stream's end
    is (index, None). Leaving early cancels every stream (and so every Triton call)."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(i: int, req: Any) -> None:
        try:
            async for item in _chunks(request, info, req):
                await queue.put((i, item))
            await queue.put((i, None))
        except errors.APIError as exc:
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
    try:
        for _ in range(len(reqs)):
            while True:
                i, item = await queue.get()
                if isinstance(item, errors.APIError):
                    raise item
                yield i, item
                if item is None:
                    break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _sse(
    request: Request, info: ModelInfo, reqs: list[Any], head: dict[str, Any], prompt_tokens: int, usage: bool
) -> AsyncIterator[str]:
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        return orjson.dumps(
            {**head, "choices": choices, **({"usage": None} if usage else {}), **extra}
        ).decode()

    def choice(i: int, delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}

    tokens, finished = 0, set()
    try:
        for i in range(len(reqs)):  # OpenAI's first chunk of a choice names the role
            yield chunk([choice(i, {"role": "assistant", "content": ""})])
        async for i, item in _merged(request, info, reqs):
            if item is None:
                if i not in finished:  # the stream ended without a reason: the length limit
                    yield chunk([choice(i, {}, "length")])
                continue
            text, n, reason, _ = item
            tokens += n
            if text:
                yield chunk([choice(i, {"content": text})])
            if reason and i not in finished:
                finished.add(i)
                yield chunk([choice(i, {}, reason)])
        if usage:
            yield orjson.dumps({**head, "choices": [], "usage": _usage(prompt_tokens, tokens)}).decode()
    except errors.APIError as exc:  # headers are gone already: report in-band (the SDK raises it)
        yield orjson.dumps(errors.openai_body(errors.to_openai(exc))).decode()
    yield "[DONE]"
