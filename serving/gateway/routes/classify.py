"""POST /v1/classify: an image in, the top-k labels with probabilities out."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from PIL import Image
from pydantic import BaseModel

from serving.gateway import codecs, errors
from serving.gateway.deps import get_catalog, infer
from serving.gateway.openapi import task_extra
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, ModelInfo
from serving.gateway.versions import version_query
from serving.imaging import CANONICALIZE_MODES, to_model_image

# ?version= pins a model version (deps.infer applies it; the dependency documents it).
router = APIRouter(tags=["classification"], dependencies=[Depends(version_query)])


def model_pixels(img: Image.Image, info: ModelInfo, size: int | None, channels: int) -> np.ndarray:
    """(C, S, S) uint8 as the model was trained to see it: the canonicalisation export wrote into
    the model's parameters (``canonicalize``, ``native_size``; none for models without them)."""
    mode = info.param("canonicalize", "none") or "none"
    if mode not in CANONICALIZE_MODES:
        raise errors.APIError(
            502, "model_mismatch", f"model {info.name!r} asks for an unknown canonicalisation {mode!r}"
        )
    return to_model_image(img, size, channels, mode, info.param_int("native_size"))


class Prediction(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[Prediction]


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/v1/classify",
    response_model=ClassifyResponse,
    openapi_extra=task_extra("classification", extra=IMAGE_BODY),
    summary="Classify an image (multipart field `file`, or a raw image/png|jpeg body)",
    responses={
        413: {"description": "too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid image or parameter"},
        503: {"description": "Triton down"},
    },
)
async def classify(
    request: Request,
    top_k: int = Query(5, ge=1, le=100, description="how many labels to return, best first"),
    model: str | None = Query(None, description="served model name; default: the first classification model"),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> ClassifyResponse:
    info = await catalog.for_task("classification", model)
    data = await codecs.read_image_bytes(request, settings)
    img = await codecs.decode_image(data, settings)
    channels = info.param_int("channels", 3) or 3
    size = info.param_int("image_size")
    pixels = model_pixels(img, info, size, channels)[None]  # (1, C, S, S) uint8
    input_name, output_name = info.inputs[0].name, info.outputs[0].name
    result = await infer(request, info, {input_name: pixels}, [output_name])
    probs = result.outputs[output_name][0]
    labels = info.labels or [str(i) for i in range(len(probs))]
    if len(labels) != len(probs):
        raise errors.APIError(
            502, "model_mismatch", f"model returned {len(probs)} scores for {len(labels)} labels"
        )
    k = min(top_k, len(probs))
    top = np.argsort(-probs, kind="stable")[:k]
    return ClassifyResponse(
        model=info.name,
        model_version=result.model_version or info.version,
        predictions=[Prediction(label=labels[i], score=float(probs[i])) for i in top],
    )
