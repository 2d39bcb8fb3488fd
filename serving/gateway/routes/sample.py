"""POST /v1/sample: images drawn from a GAN generator; a PNG grid or JSON with one base64 PNG each.

The gateway draws the latents from the seed (serving/latent.py) and sends them to Triton, so
the same seed gives the same images on every replica, and the first k images of n are those of
n=k. Without a seed one is drawn and returned (X-Seed header, ``seed`` in JSON) so any answer
can be reproduced.
"""

from __future__ import annotations

import base64
import secrets
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.gateway import codecs, errors
from serving.gateway.deps import get_catalog, infer
from serving.gateway.openapi import task_extra
from serving.gateway.triton import ModelCatalog
from serving.gateway.validation import JsonInt, OptionalJsonInt
from serving.imaging import from_chw, grid
from serving.latent import latents

router = APIRouter(tags=["sampling"])

MAX_SAMPLES = 16  # one request = one Triton batch (the exporter's max_batch_size)
MAX_SEED = 2**63 - 1


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    n: JsonInt = Field(8, ge=1, le=MAX_SAMPLES, description="images to draw")
    seed: OptionalJsonInt = Field(
        None, ge=0, le=MAX_SEED, description="fixed seed: the same images every time"
    )
    model: str | None = Field(None, description="served sampling model; default: the first one")
    format: Literal["png", "json"] = Field("png", description="png: one grid image; json: one PNG per sample")


class SampleResponse(BaseModel):
    model: str
    model_version: str
    seed: int
    width: int
    height: int
    images: list[str]  # base64 PNGs, in latent order


@router.post(
    "/v1/sample",
    openapi_extra=task_extra("sampling"),
    response_model=SampleResponse,
    summary="Draw images from a GAN generator (DCGAN on digits); a PNG grid or base64 PNGs",
    responses={
        200: {"content": {"image/png": {}}, "description": "a grid of the samples (format=png) or JSON"},
        404: {"description": "unknown model"},
        422: {"description": "invalid parameter (n over its limit, wrong model task, ...)"},
        503: {"description": "Triton down"},
    },
)
async def sample(
    request: Request, body: SampleRequest, catalog: ModelCatalog = Depends(get_catalog)
) -> Response | SampleResponse:
    info = await catalog.for_task("sampling", body.model)
    limit = info.param_int("max_samples", MAX_SAMPLES) or MAX_SAMPLES
    if body.n > limit:
        raise errors.unprocessable("invalid_parameter", f"n: at most {limit} for model {info.name!r}")
    dim = info.param_int("latent_dim")
    if not dim:
        raise errors.APIError(500, "bad_model_config", f"model {info.name!r} has no latent_dim parameter")
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED)
    names = [o.name for o in info.outputs]
    result = await infer(request, info, {info.inputs[0].name: latents(seed, body.n, dim)}, names[:1])
    images = np.asarray(result.outputs[names[0]], dtype=np.uint8)  # (n, C, S, S)
    version = result.model_version or info.version
    if body.format == "json":
        return SampleResponse(
            model=info.name,
            model_version=version,
            seed=seed,
            width=int(images.shape[3]),
            height=int(images.shape[2]),
            images=[base64.b64encode(codecs.encode_png(np.asarray(from_chw(im)))).decode() for im in images],
        )
    png = codecs.encode_png(np.asarray(from_chw(grid(images))))
    headers = codecs.png_response_headers(info.name, version) | {"X-Seed": str(seed)}
    return Response(png, media_type="image/png", headers=headers)
