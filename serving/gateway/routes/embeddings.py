"""OpenAI's POST /v1/embeddings over the text encoders: the pooled, L2-normalised ``[CLS]`` vector of
each input (the ``openai`` SDK works unchanged).

``input`` is a string or a list of strings (token-id arrays are refused: these models read characters);
more than the model's ``max_inputs`` (64) -> 413; each text follows the encoders' input rule
(serving/gateway/textenc.py: empty, NUL, invalid UTF-8 or over-long -> 422; characters outside the
vocabulary become a space). ``encoding_format`` ``base64`` is the little-endian float32 bytes of each
vector, as OpenAI sends them (the SDK's default). ``usage`` counts tokens as the model reads them:
one ``[CLS]`` plus one per character. Errors are answered in OpenAI's shape, keeping the status.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.gateway import errors, textenc
from serving.gateway.deps import get_catalog
from serving.gateway.openapi import task_extra
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog

router = APIRouter(tags=["text classification"])


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request; unknown fields are accepted and ignored, as OpenAI's SDKs expect."""

    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | list[str] = Field(description="a text or a list of texts (at most the model's max_inputs)")
    model: str = Field(description="served text-classification model, e.g. bert")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")
    dimensions: int | None = Field(None, ge=1, le=65536, description="must equal the model's size if given")
    user: str | None = None

    @field_validator("dimensions", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return textenc.whole_number(value)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingsResponse,
    openapi_extra=task_extra(textenc.TASK),
    summary="OpenAI-compatible embeddings (pooled, L2-normalised encoder output)",
    responses={
        404: {"description": "unknown model (OpenAI error shape)"},
        413: {"description": "more inputs than the model's max_inputs (OpenAI error shape)"},
        422: {"description": "empty, too long, NUL or invalid UTF-8 text (OpenAI error shape)"},
        503: {"description": "Triton down"},
    },
)
async def embeddings(
    body: EmbeddingsRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Any:
    try:
        return await _embeddings(body, request, catalog, settings)
    except errors.APIError as exc:
        if isinstance(exc, errors.OpenAIError):
            raise
        param = "model" if exc.code in ("model_not_found", "wrong_task") else None
        raise errors.OpenAIError(exc.status, exc.code, exc.message, param, exc.headers) from None


async def _embeddings(
    body: EmbeddingsRequest, request: Request, catalog: ModelCatalog, settings: Settings
) -> EmbeddingsResponse:
    info = await textenc.pick_model(catalog, body.model)
    params = textenc.EncoderParams.of(info)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise errors.OpenAIError(422, "empty_input", "input is an empty list", "input")
    if len(texts) > params.max_inputs:
        raise errors.OpenAIError(
            413, "too_many_inputs", f"input has {len(texts)} texts; the limit is {params.max_inputs}", "input"
        )
    if body.dimensions is not None and body.dimensions != params.embedding_dim:
        raise errors.OpenAIError(
            422,
            "invalid_parameter",
            f"dimensions={body.dimensions}: model {info.name!r} embeds in {params.embedding_dim}",
            "dimensions",
        )
    tokens, mask, chars = textenc.encode(params, texts, settings, what="input")
    _, emb, _ = await textenc.run(request, info, tokens, mask)
    vectors = emb.astype("<f4", copy=False)
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(np.ascontiguousarray(v).tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else v.tolist(),
        )
        for i, v in enumerate(vectors)
    ]
    used = sum(chars) + len(chars)  # [CLS] + one token per character
    return EmbeddingsResponse(data=data, model=info.name, usage=Usage(prompt_tokens=used, total_tokens=used))
