"""GET /v1/models: what Triton serves, discovered from its repository index and model configs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from serving.gateway import errors
from serving.gateway.deps import get_catalog
from serving.gateway.triton import ModelCatalog, ModelInfo

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="List served models with their task facts")
async def list_models(catalog: ModelCatalog = Depends(get_catalog)) -> dict[str, Any]:
    if not catalog.models:
        await catalog.refresh()
    served = sorted(catalog.models.values(), key=lambda m: m.name)
    # "models": the gateway's own view; "object"/"data": OpenAI's list shape, for client.models.list()
    return {
        "object": "list",
        "data": [openai_model(m) for m in served],
        "models": [m.public() for m in served],
    }


def openai_model(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.name, "object": "model", "created": info.created, "owned_by": "tritonstack"}


@router.get("/v1/models/{model_id}", summary="One served model, in OpenAI's model shape")
async def retrieve_model(model_id: str, catalog: ModelCatalog = Depends(get_catalog)) -> dict[str, Any]:
    try:
        return openai_model(await catalog.get(model_id))
    except errors.APIError as exc:
        raise errors.to_openai(exc, "model") from None
