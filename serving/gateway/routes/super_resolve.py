"""POST /v1/super-resolve: an image in, the upscaled PNG out (PSNR-oriented or GAN generator).

Images larger than the tile size run as overlapping tiles (serving/gateway/tiling.py), as many
tiles per Triton request as the model's memory budget allows, so memory stays bounded whatever the
upload size.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from serving.gateway import codecs, context, errors, tiling
from serving.gateway.deps import get_catalog, infer
from serving.gateway.openapi import REFINERS, task_extra
from serving.gateway.routes.classify import IMAGE_BODY
from serving.gateway.settings import Settings, get_settings
from serving.gateway.triton import ModelCatalog, ModelInfo
from serving.imaging import from_chw, to_model_image

router = APIRouter(tags=["super-resolution"])

SCALES = (2, 4)  # the upscaling factors the route knows (checked below, listed in the document)


async def pick_model(catalog: ModelCatalog, name: str | None, scale: int, variant: str) -> ModelInfo:
    if name:
        return await catalog.for_task("super_resolution", name)
    await catalog.for_task("super_resolution")  # raises a clear 404/503 when none is served
    matches = sorted(
        (
            m
            for m in catalog.models.values()
            if m.task == "super_resolution"
            and m.param_int("scale") == scale
            and m.param("variant", "psnr") == variant
        ),
        key=lambda m: m.name,
    )
    if not matches:
        offered = sorted(
            {
                (m.param_int("scale"), m.param("variant"))
                for m in catalog.models.values()
                if m.task == "super_resolution"
            }
        )
        raise errors.unprocessable(
            "unsupported_scale",
            f"no super-resolution model for scale={scale}, "
            f"model={variant!r}; served (scale, model): {offered}",
        )
    return matches[0]


def document_choices(
    op: dict[str, Any], body: Any, schemas: Any, models: list[ModelInfo], settings: Settings
) -> None:
    """``scale`` and ``model`` in the document: the served pairs (one of each is always served)."""
    scales = sorted({s for m in models if (s := m.param_int("scale")) in SCALES})
    variants = sorted({m.param("variant", "psnr") or "psnr" for m in models})
    pairs = {(m.param_int("scale"), m.param("variant", "psnr") or "psnr") for m in models}
    if not scales or len(pairs) != len(scales) * len(variants):
        return  # not every pair is served: unsupported_scale (422) is the answer for the others
    for p in op.get("parameters", []):
        if p.get("in") == "query" and p["name"] == "scale":
            p["schema"]["enum"] = scales
        if p.get("in") == "query" and p["name"] == "model":
            p["schema"]["enum"] = variants
            p["schema"].pop("pattern", None)


REFINERS["super_resolution"] = document_choices


def call_budget(info: ModelInfo, settings: Settings) -> int:
    """Bytes one Triton call of ``info`` may plan: the gateway's budget, or the model's if lower."""
    return min(settings.max_call_bytes, info.param_int("max_call_bytes", 0) or settings.max_call_bytes)


async def upscale(
    request: Request, info: ModelInfo, chw: np.ndarray, settings: Settings, tile: int | None = None
) -> np.ndarray:
    """(C, H, W) uint8 -> (C, sH, sW) uint8, tiled when larger than ``tile`` or the call budget."""
    scale = info.param_int("scale", 2) or 2
    bpp = info.param_int("bytes_per_pixel", 0) or 0
    budget = call_budget(info, settings)
    # The model states its receptive-field radius (tile_margin); never discard less than that.
    margin = max(settings.sr_tile_margin, info.param_int("tile_margin", 0) or 0)
    least = 2 * margin + 16  # a tile must keep an owned core between its two margins
    tile = tiling.budget_tile(tile or settings.sr_tile_size, bpp, budget, least)
    in_name, out_name = info.inputs[0].name, info.outputs[0].name
    c, h, w = chw.shape
    if h <= tile and w <= tile:
        result = await infer(request, info, {in_name: chw[None]}, [out_name])
        return result.outputs[out_name][0]
    th, tw, tiles = tiling.plan(h, w, tile, margin)
    cap = min(settings.sr_tiles_per_request, info.max_batch_size or 1)
    per_call = tiling.tiles_per_call(th, tw, bpp, budget, cap)
    out = np.empty((c, h * scale, w * scale), dtype=np.uint8)
    limit = asyncio.Semaphore(2)  # at most two tile batches in flight per request: bounded memory

    async def run(part: slice) -> None:
        async with limit:
            stack = tiling.cut(chw, tiles[part], th, tw)  # cut per call: no whole-image tile stack
            res = await infer(request, info, {in_name: stack}, [out_name])
            tiling.paste(out, res.outputs[out_name], tiles[part], scale)

    await asyncio.gather(*(run(s) for s in tiling.chunks(len(tiles), per_call)))
    return out


@router.post(
    "/v1/super-resolve",
    openapi_extra=task_extra("super_resolution", "model_name", IMAGE_BODY),
    response_class=Response,
    summary="Upscale an image (PNG out); scale 2 or 4; PSNR-oriented (psnr) or GAN generator",
    responses={
        200: {"content": {"image/png": {}}, "description": "the upscaled image"},
        413: {"description": "input or output too large"},
        415: {"description": "not an image"},
        422: {"description": "invalid"},
        503: {"description": "Triton down"},
    },
)
async def super_resolve(
    request: Request,
    scale: int = Query(
        2, description="upscaling factor: 2 or 4 (as served)", json_schema_extra={"enum": list(SCALES)}
    ),
    model: str = Query(
        "psnr",
        pattern="^(psnr|gan)$",
        description="psnr: SRResNet (faithful, higher PSNR); gan: SRGAN (sharper textures)",
    ),
    model_name: str | None = Query(None, description="a served model by name (overrides scale/model)"),
    catalog: ModelCatalog = Depends(get_catalog),
    settings: Settings = Depends(get_settings),
) -> Response:
    if scale not in SCALES:
        raise errors.unprocessable("invalid_parameter", "scale must be 2 or 4")
    info = await pick_model(catalog, model_name, scale, model)
    img = await codecs.image_from_request(request, settings)
    real_scale = info.param_int("scale", scale) or scale
    out_pixels = img.size[0] * img.size[1] * real_scale * real_scale
    if out_pixels > settings.sr_max_output_pixels:
        raise errors.too_large(
            f"output would be {img.size[0] * real_scale}x{img.size[1] * real_scale} = "
            f"{out_pixels} pixels, above the limit of {settings.sr_max_output_pixels}; "
            "send a smaller image or a smaller scale"
        )
    context.of(request).model = info.name
    chw = to_model_image(img, None, info.param_int("channels", 3) or 3)
    out = await upscale(request, info, chw, settings)
    png = codecs.encode_png(np.asarray(from_chw(out)))
    return Response(
        png,
        media_type="image/png",
        headers=codecs.png_response_headers(info.name, context.of(request).model_version),
    )
