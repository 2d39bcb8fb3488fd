"""POST /v1/segment: an image in; per-class pixel fractions, the mask (palette PNG), an overlay."""

from __future__ import annotations

import base64
import math

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from PIL import Image
from pydantic import BaseModel

from serving.gateway import codecs, context, errors
from serving.gateway.deps import get_catalog, infer
from serving.gateway.openapi import task_extra
from serving.gateway.routes.classify import IMAGE_BODY
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, ModelInfo
from serving.imaging import to_model_image

router = APIRouter(tags=["segmentation"])


class ClassFraction(BaseModel):
    label: str
    index: int
    fraction: float


class SegmentResponse(BaseModel):
    model: str
    model_version: str
    width: int
    height: int
    classes: list[ClassFraction]
    mask_png: str  # base64 palette PNG, pixel value = class index
    overlay_png: str | None = None  # base64 RGB PNG, image blended with class colours


def palette_of(info: ModelInfo, n: int) -> np.ndarray:
    pal = info.param_json("palette") or []
    colours = np.zeros((max(n, len(pal)), 3), dtype=np.uint8)
    for i, rgb in enumerate(pal):
        colours[i] = rgb
    for i in range(len(pal), n):  # deterministic distinct colours for unlisted classes
        colours[i] = [(37 * i) % 256, (91 * i) % 256, (173 * i) % 256]
    return colours


async def run_segmentation(
    request: Request, info: ModelInfo, img: Image.Image, settings: Settings
) -> np.ndarray:
    """Mask (H, W) uint8 at the image's own size. Pads to the U-Net's multiple; downsizes huge inputs."""
    channels = info.param_int("channels", 3) or 3
    multiple = info.param_int("multiple_of", 16) or 16
    w0, h0 = img.size
    scale = min(1.0, settings.segment_max_side / max(w0, h0))
    work = (
        img
        if scale == 1.0
        else img.resize((max(1, round(w0 * scale)), max(1, round(h0 * scale))), Image.Resampling.BILINEAR)
    )
    arr = to_model_image(work, None, channels)  # (C, h, w)
    _, h, w = arr.shape
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    if ph or pw:  # edge padding keeps the border statistics of the scene
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode="edge")
    result = await infer(request, info, {info.inputs[0].name: arr[None]}, [info.outputs[0].name])
    mask = result.outputs[info.outputs[0].name][0][:h, :w].astype(np.uint8)
    if scale != 1.0:
        mask = np.asarray(Image.fromarray(mask).resize((w0, h0), Image.Resampling.NEAREST))
    return mask


@router.post(
    "/v1/segment",
    response_model=SegmentResponse,
    openapi_extra=task_extra("segmentation", extra=IMAGE_BODY),
    summary="Segment an image: class fractions + palette mask PNG (+ overlay)",
    responses={
        200: {"content": {"image/png": {}}, "description": "JSON, or a PNG with output=mask|overlay"},
        413: {"description": "too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid"},
        503: {"description": "Triton down"},
    },
)
async def segment(
    request: Request,
    output: str | None = Query(
        None,
        pattern="^(json|mask|overlay)$",
        description="json (default), or a PNG body: mask (palette) or overlay; "
        "`Accept: image/png` alone means mask",
    ),
    include_overlay: bool = Query(False, description="add a base64 overlay PNG to the JSON answer"),
    alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity of the class colours"),
    model: str | None = Query(None, description="served model name; default: the first segmentation model"),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Response | SegmentResponse:
    info = await catalog.for_task("segmentation", model)
    img = await codecs.image_from_request(request, settings)
    mask = await run_segmentation(request, info, img, settings)
    labels = info.param_json("classes") or []
    n = max(len(labels), int(mask.max()) + 1)
    colours = palette_of(info, n)
    version = context.of(request).model_version
    if (
        output is None
        and "image/png" in request.headers.get("accept", "")
        and "json" not in request.headers.get("accept", "")
    ):
        output = "mask"
    overlay = None
    if output == "overlay" or include_overlay:
        base = np.asarray(img.convert("RGB"), dtype=np.float32)
        blended = (1 - alpha) * base + alpha * colours[mask].astype(np.float32)
        overlay = codecs.encode_png(blended.round().astype(np.uint8))
    mask_png = codecs.encode_png(mask, palette=colours[:n].reshape(-1).tolist())
    headers = codecs.png_response_headers(info.name, version)
    if output == "mask":
        return Response(mask_png, media_type="image/png", headers=headers)
    if output == "overlay":
        assert overlay is not None
        return Response(overlay, media_type="image/png", headers=headers)
    counts = np.bincount(mask.reshape(-1), minlength=n)
    total = float(mask.size)
    classes = [
        ClassFraction(label=labels[i] if i < len(labels) else str(i), index=i, fraction=counts[i] / total)
        for i in range(n)
    ]
    if not classes:
        raise errors.APIError(502, "model_mismatch", "segmentation model returned no classes")
    return SegmentResponse(
        model=info.name,
        model_version=version,
        width=img.size[0],
        height=img.size[1],
        classes=classes,
        mask_png=base64.b64encode(mask_png).decode(),
        overlay_png=base64.b64encode(overlay).decode() if overlay and include_overlay else None,
    )
