"""POST /v1/translate: spelled-out English numbers -> digits (``seq2seq`` or ``transformer``).

The decoder loop runs inside Triton (serving/triton/models/translator.py: the encoder once per
request, greedy steps batched across concurrent requests); the gateway validates the text and opens
one ModelStreamInfer call that answers once.

Input rule (also in the README): the text must be valid UTF-8 without NUL characters and at most
``max_prompt_chars`` long as sent; it is then lower-cased and its white space collapsed to single
spaces, and what remains must be 1 .. ``max_source_chars`` (the model's parameter, 128) characters of
the model's vocabulary (``a-z``, space, comma and hyphen for the numbers models). Characters outside
it are refused, never mapped (422 ``unsupported_characters``, naming them): a digit or an accent in a
spelled-out number has no right answer to map it to.

``return_attention: true`` adds ``attention`` (one row per output character, over the characters of
``source``, the normalised text the model read) and ``source``.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.gateway import context, errors, validation
from serving.gateway.deps import get_catalog, request_id, version_for
from serving.gateway.inference import InferenceService
from serving.gateway.openapi import REFINERS, task_extra
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, ModelInfo, build_request

router = APIRouter(tags=["translation"])

TASK = "translation"
DEFAULT_MODEL = "transformer"
DEFAULT_MAX_SOURCE = 128


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        description="a number in English words", examples=["seven hundred and five million, thirty thousand"]
    )
    model: str | None = Field(None, description="seq2seq or transformer (any served translation model)")
    return_attention: bool = Field(False, description="add the cross-attention weights")
    version: str | None = Field(None, pattern=r"^[1-9][0-9]{0,8}$", description="pin a model version")


class TranslateResponse(BaseModel):
    model: str
    model_version: str
    text: str
    source: str | None = Field(None, description="the normalised input (with return_attention)")
    attention: list[list[float]] | None = Field(
        None, description="per output character, weights over the characters of `source`"
    )


def text_pattern(chars: str) -> str:
    """The texts :func:`normalize` turns into a non-empty string over ``chars``: a regex for the document.

    Every code point whose lower case is made of vocabulary characters (so upper case too), white
    space anywhere (it collapses to one space), at least one character that is not white space."""
    ok = "".join(
        c
        for c in map(chr, range(sys.maxunicode + 1))
        if not c.isspace() and not 0xD800 <= ord(c) <= 0xDFFF and all(x in chars for x in c.lower())
    )
    cls = "".join(re.escape(c) for c in ok)
    return rf"^\s*[{cls}][\s{cls}]*$"


def document_text(
    op: dict[str, Any],
    body: dict[str, Any] | None,
    schemas: dict[str, Any],
    models: list[ModelInfo],
    settings: Settings,
) -> None:
    """``text``'s pattern and length in the document, from the served models' vocabularies and limits."""
    vocabularies = [m.param_json("source_chars") for m in models]
    if body is None or not vocabularies or not all(isinstance(v, str) and v for v in vocabularies):
        return
    common = set.intersection(*(set(v) for v in vocabularies))
    limits = [m.param_int("max_source_chars", DEFAULT_MAX_SOURCE) or DEFAULT_MAX_SOURCE for m in models]
    text = body["properties"]["text"]
    # The raw length bound is the normalised one (white space runs collapse): a bound, not the set.
    text["pattern"], text["maxLength"] = (
        text_pattern("".join(sorted(common))),
        min([settings.max_prompt_chars, *limits]),
    )


REFINERS[TASK] = document_text


async def pick_model(catalog: ModelCatalog, name: str | None) -> ModelInfo:
    if name:
        return await catalog.for_task(TASK, name)
    info = await catalog.for_task(TASK)
    default = catalog.models.get(DEFAULT_MODEL)
    return default if default is not None and default.task == TASK else info


def normalize(info: ModelInfo, text: str, settings: Settings) -> str:
    text = validation.check_prompt(text, settings.max_prompt_chars, what="text")
    chars = info.param_json("source_chars")
    if not isinstance(chars, str) or not chars:
        raise errors.APIError(502, "model_mismatch", f"model {info.name!r} names no source vocabulary")
    text = " ".join(text.lower().split())
    if not text:
        raise errors.unprocessable("empty_prompt", "text is empty (white space only)")
    bad = sorted({c for c in text if c not in chars})
    if bad:
        raise errors.unprocessable(
            "unsupported_characters",
            f"text contains characters outside the model's vocabulary {chars!r}: {json.dumps(''.join(bad))}",
        )
    limit = info.param_int("max_source_chars", DEFAULT_MAX_SOURCE) or DEFAULT_MAX_SOURCE
    if len(text) > limit:
        raise errors.unprocessable(
            "prompt_too_long", f"text has {len(text)} characters after normalisation; the limit is {limit}"
        )
    return text


@router.post(
    "/v1/translate",
    openapi_extra=task_extra(TASK),
    response_model=TranslateResponse,
    response_model_exclude_none=True,
    summary="Translate spelled-out English numbers to digits (greedy decoding inside Triton)",
    responses={
        422: {"description": "empty, too long, NUL, invalid UTF-8 or characters outside the vocabulary"},
        503: {"description": "Triton down"},
    },
)
async def translate(
    body: TranslateRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Any:
    info = await pick_model(catalog, body.model)
    text = normalize(info, body.text, settings)
    version = body.version or version_for(request, info)
    req = build_request(
        info.name,
        {"TEXT": np.array([text.encode("utf-8")], dtype=object)},
        version=version,
        request_id=request_id(request),
    )
    service: InferenceService = request.app.state.inference
    ctx = context.of(request)
    result = None
    async for part in service.stream_text(ctx, req):
        result = part  # one response (the final one)
    if result is None:
        raise errors.APIError(502, "upstream_error", f"model {info.name!r} sent no response")
    out = result.outputs
    served = result.model_version or version or info.version
    service.served(ctx, info.name, served)
    raw = out["TEXT"].reshape(-1)[0]
    response = TranslateResponse(
        model=info.name,
        model_version=served,
        text=raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw),
    )
    if body.return_attention:
        att = out["ATTENTION"].astype(np.float64).reshape(-1, len(text))
        response.source, response.attention = text, att.tolist()
    return response
