"""The admin API under /admin: model versions, load/unload, and canary traffic splits.

Authenticated by the admin key (``GATEWAY_ADMIN_KEY`` or the file ``GATEWAY_ADMIN_KEY_FILE``) in
the ``X-Admin-Key`` header, compared in constant time: missing -> 401, wrong -> 403, no key
configured -> 403 (the admin API is off). It is left out of the public OpenAPI document.

Everything applies at once, without a restart: loads and unloads go to Triton's repository API
(Triton runs with ``--model-control-mode=explicit``), splits live in the gateway process and are
read per request by the task routes, the KServe HTTP routes and the gRPC front door. Splits are
per gateway process: with several replicas, set the split on each (or front them with one).

A zero-downtime version switch:

    PUT  /admin/models/m/traffic {"stable": "1", "canary": "2", "canary_percent": 0}  # hold traffic on 1
    POST /admin/models/m/load                     # Triton loads version 2 beside 1 (version_policy)
    PUT  /admin/models/m/traffic {... "canary_percent": 10}   ... 50 ... 100
    POST /admin/models/m/load {"versions": [2]}   # retire 1: traffic leaves it before Triton unloads it
    DELETE /admin/models/m/traffic                # unpinned requests: Triton's newest
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from fastapi import APIRouter, Body, Depends, Path, Request
from google.protobuf import json_format
from pydantic import BaseModel, Field
from tritonclient.grpc import service_pb2 as pb

from serving.gateway import errors
from serving.gateway.auth import ADMIN_HEADER
from serving.gateway.deps import get_catalog, get_triton
from serving.gateway.guard import Guard
from serving.gateway.triton import ModelCatalog, TritonClient, TritonError
from serving.gateway.versions import TrafficSplit, VersionRouter

log = logging.getLogger("gateway.admin")

LOAD_TIMEOUT_S = 300.0  # loading a model (python stubs, onnxruntime sessions) can take a while on CPU


async def require_admin(request: Request) -> None:
    guard: Guard = request.app.state.guard
    guard.admin.check(request.headers.get(ADMIN_HEADER), request.client.host if request.client else "?")


router = APIRouter(
    prefix="/admin", tags=["admin"], include_in_schema=False, dependencies=[Depends(require_admin)]
)

ModelName = Path(max_length=256, description="model name in Triton's repository")


class LoadRequest(BaseModel):
    versions: list[int] | None = Field(
        None,
        min_length=1,
        description="serve exactly these versions (a config override of version_policy); "
        "default: the versions the model's config.pbtxt policy selects",
    )


class UnloadRequest(BaseModel):
    unload_dependents: bool = False


async def get_versions(request: Request) -> VersionRouter:
    return request.app.state.versions


async def _index(triton: TritonClient) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    return await triton.repository_index(timeout=10.0)


def _model_entries(index: list[Any], name: str) -> list[dict[str, str]]:
    rows = [{"version": m.version, "state": m.state, "reason": m.reason} for m in index if m.name == name]
    return sorted(rows, key=lambda r: (len(r["version"]), r["version"]))


def _ready_versions(index: list[Any], name: str) -> list[str]:
    return [r["version"] for r in _model_entries(index, name) if r["state"] == "READY"]


@router.get("/models", summary="Every model in Triton's repository: versions, states, traffic split")
async def list_models(
    triton: TritonClient = Depends(get_triton), versions: VersionRouter = Depends(get_versions)
) -> dict[str, Any]:
    index = await _index(triton)
    names = sorted({m.name for m in index})
    return {
        "models": [
            {"name": n, "versions": _model_entries(index, n), "traffic": versions.describe(n)} for n in names
        ]
    }


@router.get("/models/{name}", summary="One model: versions, states, traffic split")
async def get_model(
    name: str = ModelName,
    triton: TritonClient = Depends(get_triton),
    versions: VersionRouter = Depends(get_versions),
) -> dict[str, Any]:
    index = await _index(triton)
    rows = _model_entries(index, name)
    if not rows:
        raise errors.not_found("model_not_found", f"model {name!r} is not in Triton's repository")
    return {"name": name, "versions": rows, "traffic": versions.describe(name)}


@router.post("/models/{name}/load", summary="Load (or reload) a model; optionally exactly these versions")
async def load_model(
    name: str = ModelName,
    body: LoadRequest | None = Body(None),
    triton: TritonClient = Depends(get_triton),
    catalog: ModelCatalog = Depends(get_catalog),
    versions: VersionRouter = Depends(get_versions),
) -> dict[str, Any]:
    wanted = sorted(set(body.versions)) if body is not None and body.versions else None
    if wanted and wanted[0] < 1:
        raise errors.unprocessable("invalid_parameter", "versions are positive integers")
    try:
        if wanted:
            # Traffic leaves the versions that go *before* Triton unloads them (the catalogue
            # drops them only once Triton has).
            versions.restricted[name] = frozenset(str(v) for v in wanted)
            await _load_versions(triton, name, wanted)
        else:
            await triton.load(pb.RepositoryModelLoadRequest(model_name=name), LOAD_TIMEOUT_S)
    except TritonError as exc:
        raise _repo_error(exc, name, "load") from None
    finally:
        await catalog.refresh()  # the catalogue lists the new versions READY before routes use them
        versions.restricted.pop(name, None)
    index = await _index(triton)
    log.info("loaded %s: versions %s", name, _ready_versions(index, name))
    return {"name": name, "versions": _model_entries(index, name), "traffic": versions.describe(name)}


async def _load_versions(triton: TritonClient, name: str, wanted: list[int]) -> None:
    """Serve exactly ``wanted``: Triton's load API with a config override of the version policy.

    The override needs the model's config, which Triton only gives for a loaded model: an unloaded
    one is loaded from its files first. Gotcha: a later load *without* versions reuses the files'
    config, but Triton sees nothing changed on disk and keeps these versions; pass versions again.
    """
    try:
        cfg = await triton.model_config(name, timeout=10.0)
    except TritonError as exc:
        if exc.rpc_code not in (
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.INVALID_ARGUMENT,
        ):
            raise
        await triton.load(pb.RepositoryModelLoadRequest(model_name=name), LOAD_TIMEOUT_S)
        cfg = await triton.model_config(name, timeout=10.0)
    cfg.version_policy.specific.versions[:] = wanted
    req = pb.RepositoryModelLoadRequest(model_name=name)
    req.parameters["config"].string_param = json_format.MessageToJson(cfg)
    await triton.load(req, LOAD_TIMEOUT_S)


@router.post("/models/{name}/unload", summary="Unload every version of a model")
async def unload_model(
    name: str = ModelName,
    body: UnloadRequest | None = Body(None),
    triton: TritonClient = Depends(get_triton),
    catalog: ModelCatalog = Depends(get_catalog),
    versions: VersionRouter = Depends(get_versions),
) -> dict[str, Any]:
    req = pb.RepositoryModelUnloadRequest(model_name=name)
    if body is not None and body.unload_dependents:
        req.parameters["unload_dependents"].bool_param = True
    try:
        await triton.unload(req, LOAD_TIMEOUT_S)
    except TritonError as exc:
        raise _repo_error(exc, name, "unload") from None
    finally:
        await catalog.refresh()
    log.info("unloaded %s", name)
    return {
        "name": name,
        "versions": _model_entries(await _index(triton), name),
        "traffic": versions.describe(name),
    }


def _repo_error(exc: TritonError, name: str, what: str) -> errors.APIError:
    if exc.status in (502, 422) or exc.rpc_code == grpc.StatusCode.INTERNAL:
        # Triton reports a failed load (bad files, missing version folder) as INTERNAL/INVALID_ARGUMENT.
        return errors.APIError(409, f"{what}_failed", f"Triton could not {what} {name!r}: {exc.rpc_details}")
    return exc


@router.get(
    "/models/{name}/traffic", summary="The model's traffic split (null: unpinned requests go to the newest)"
)
async def get_traffic(
    name: str = ModelName, versions: VersionRouter = Depends(get_versions)
) -> dict[str, Any]:
    return {"name": name, "traffic": versions.describe(name)}


@router.put("/models/{name}/traffic", summary="Set the model's canary split between two versions")
async def set_traffic(
    split: TrafficSplit,
    name: str = ModelName,
    catalog: ModelCatalog = Depends(get_catalog),
    versions: VersionRouter = Depends(get_versions),
) -> dict[str, Any]:
    # Versions need not be loaded yet (hold traffic on the stable one, then load the canary):
    # a version that is not READY never gets a request; the answer says which ones are.
    versions.splits[name] = split
    info = catalog.models.get(name)
    ready = list(info.versions) if info else []
    log.info("traffic split for %s: %s", name, split.model_dump())
    return {
        "name": name,
        "traffic": versions.describe(name),
        "ready_versions": ready,
        "warnings": [
            f"version {v} is not READY: its share goes to the other version until it is"
            for v in (split.stable, split.canary)
            if v not in ready
        ],
    }


@router.delete(
    "/models/{name}/traffic", summary="Remove the split: unpinned requests go to the newest version"
)
async def clear_traffic(
    name: str = ModelName, versions: VersionRouter = Depends(get_versions)
) -> dict[str, Any]:
    versions.splits.pop(name, None)
    return {"name": name, "traffic": None}
