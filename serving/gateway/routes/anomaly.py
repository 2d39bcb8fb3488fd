"""POST /v1/anomaly: an image in; reconstruction-error score, threshold and verdict out."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from serving.gateway import codecs
from serving.gateway.deps import get_catalog, infer
from serving.gateway.openapi import task_extra
from serving.gateway.routes.classify import IMAGE_BODY, model_pixels
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog
from serving.imaging import from_chw

router = APIRouter(tags=["anomaly detection"])


class AnomalyResponse(BaseModel):
    model: str
    model_version: str
    score: float  # reconstruction error; higher = less like the training data
    threshold: float
    is_anomaly: bool
    reconstruction_png: str | None = None


@router.post(
    "/v1/anomaly",
    response_model=AnomalyResponse,
    openapi_extra=task_extra("anomaly", extra=IMAGE_BODY),
    summary="Score how unlike the training data an image is (autoencoder reconstruction error)",
    responses={
        413: {"description": "too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid"},
        503: {"description": "Triton down"},
    },
)
async def anomaly(
    request: Request,
    include_reconstruction: bool = Query(
        False, description="add the autoencoder's reconstruction as base64 PNG"
    ),
    model: str | None = Query(None, description="served model name; default: the first anomaly model"),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> AnomalyResponse:
    info = await catalog.for_task("anomaly", model)
    img = await codecs.image_from_request(request, settings)
    pixels = model_pixels(img, info, info.param_int("image_size"), info.param_int("channels", 1) or 1)[None]
    names = [o.name for o in info.outputs]
    result = await infer(request, info, {info.inputs[0].name: pixels}, names)
    score = float(np.asarray(result.outputs[names[0]]).reshape(-1)[0])
    threshold = info.param_float("threshold", 0.0) or 0.0
    recon = None
    if include_reconstruction and len(names) > 1:
        recon = base64.b64encode(
            codecs.encode_png(np.asarray(from_chw(result.outputs[names[1]][0])))
        ).decode()
    return AnomalyResponse(
        model=info.name,
        model_version=result.model_version or info.version,
        score=score,
        threshold=threshold,
        is_anomaly=score > threshold,
        reconstruction_png=recon,
    )
