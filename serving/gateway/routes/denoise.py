"""POST /v1/denoise: a noisy image in, the denoised PNG out (same size).

Large images run as overlapping tiles through the super-resolution path (scale 1): same
GATEWAY_SR_TILE_* settings, same bounded memory, same output-pixel limit (413).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from serving.gateway import codecs, context, errors
from serving.gateway.deps import get_catalog
from serving.gateway.openapi import task_extra
from serving.gateway.routes.classify import IMAGE_BODY
from serving.gateway.routes.super_resolve import upscale
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog
from serving.imaging import from_chw, to_model_image

router = APIRouter(tags=["denoising"])


@router.post(
    "/v1/denoise",
    openapi_extra=task_extra("denoising", extra=IMAGE_BODY),
    response_class=Response,
    summary="Remove noise from an image (denoising autoencoder); PNG out, same size",
    responses={
        200: {"content": {"image/png": {}}, "description": "the denoised image"},
        413: {"description": "input or output too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid"},
        503: {"description": "Triton down"},
    },
)
async def denoise(
    request: Request,
    model: str | None = Query(None, description="served model name; default: the first denoising model"),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Response:
    info = await catalog.for_task("denoising", model)
    img = await codecs.image_from_request(request, settings)
    out_pixels = img.size[0] * img.size[1]
    if out_pixels > settings.sr_max_output_pixels:  # the image-to-image output limit, as for super-resolution
        raise errors.too_large(
            f"output would be {img.size[0]}x{img.size[1]} = {out_pixels} pixels, above the limit of "
            f"{settings.sr_max_output_pixels}; send a smaller image"
        )
    context.of(request).model = info.name
    chw = to_model_image(img, None, info.param_int("channels", 3) or 3)
    out = await upscale(request, info, chw, settings)  # scale 1: the same overlapping tiles, same settings
    png = codecs.encode_png(np.asarray(from_chw(out)))
    return Response(
        png,
        media_type="image/png",
        headers=codecs.png_response_headers(info.name, context.of(request).model_version),
    )
