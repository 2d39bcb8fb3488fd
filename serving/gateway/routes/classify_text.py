"""POST /v1/classify-text: a passage in, the genre labels (comedy, history, tragedy) with probabilities
out, from a BERT-style encoder (training/classify_text.py). Input rule: serving/gateway/textenc.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.gateway import textenc
from serving.gateway.deps import get_catalog
from serving.gateway.openapi import task_extra
from serving.gateway.routes.classify import Prediction
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog

router = APIRouter(tags=["text classification"])


class ClassifyTextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        description="a passage (at most the model's max_chars characters)",
        examples=["Now is the winter of our discontent made glorious summer"],
    )
    model: str | None = Field(None, description="served text-classification model (default: the first)")
    top_k: int = Field(3, ge=1, le=100, description="how many labels to return, best first")

    @field_validator("top_k", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return textenc.whole_number(value)


class ClassifyTextResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[Prediction]


@router.post(
    "/v1/classify-text",
    response_model=ClassifyTextResponse,
    openapi_extra=task_extra(textenc.TASK),
    summary="Classify a text passage (genre of a Shakespeare passage with the bert model)",
    responses={
        422: {"description": "empty, too long, NUL or invalid UTF-8 text, or an invalid parameter"},
        503: {"description": "Triton down"},
    },
)
async def classify_text(
    body: ClassifyTextRequest,
    request: Request,
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> ClassifyTextResponse:
    info = await textenc.pick_model(catalog, body.model)
    params = textenc.EncoderParams.of(info)
    tokens, mask, _ = textenc.encode(params, [body.text], settings)
    probs, _, version = await textenc.run(request, info, tokens, mask)
    row = probs[0]
    top = np.argsort(-row, kind="stable")[: min(body.top_k, len(row))]
    return ClassifyTextResponse(
        model=info.name,
        model_version=version,
        predictions=[Prediction(label=params.labels[i], score=float(row[i])) for i in top],
    )
