"""GET /v1/models: what Triton serves, discovered from its repository index and model configs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from serving.gateway.deps import get_catalog
from serving.gateway.triton import ModelCatalog

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="List served models with their task facts")
async def list_models(catalog: ModelCatalog = Depends(get_catalog)) -> dict[str, Any]:
    if not catalog.models:
        await catalog.refresh()
    return {"models": [m.public() for m in sorted(catalog.models.values(), key=lambda m: m.name)]}
