"""Asyncio client for Triton's KServe v2 gRPC API, and the catalogue of served models.

:class:`TritonClient` makes every call the gateway makes to Triton (inference, streams, metadata,
config, statistics, the repository index, load/unload); nothing else touches its gRPC stub. A
failed call raises :class:`TritonError`: the gateway's status and code for the HTTP doors, with
Triton's own gRPC code and message for the gRPC door, which passes them through.

We call the generated gRPC stub directly instead of ``tritonclient.grpc.aio``: the design
notes measured ~40% of the gateway's per-request CPU inside that client (request building,
numpy round trips and its polling thread). Raw tensors go out as ``raw_input_contents`` and
come back as ``raw_output_contents`` with one ``np.frombuffer`` each, no copies in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.gateway import errors

log = logging.getLogger("gateway.triton")

NP_TO_KSERVE = {
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.bool_): "BOOL",
}
KSERVE_TO_NP: dict[str, Any] = {v: k for k, v in NP_TO_KSERVE.items()}
CONFIG_TO_KSERVE = {"TYPE_" + k: k for k in KSERVE_TO_NP} | {"TYPE_STRING": "BYTES", "TYPE_BOOL": "BOOL"}
CONFIG_TO_KSERVE.update({"TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64"})

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after Triton restarts (default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Spread calls over every address the name resolves to (a headless Service of Triton pods).
    ("grpc.lb_policy_name", "round_robin"),
]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # KServe datatype: UINT8, FP32, BYTES, ...
    dims: tuple[int, ...]  # without the batch axis when the model batches


@dataclass
class ModelInfo:
    """What the gateway knows about one served model, read from Triton at start-up."""

    name: str
    version: str
    task: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    max_batch_size: int
    parameters: dict[str, str] = field(default_factory=dict)
    decoupled: bool = False
    versions: tuple[str, ...] = ()  # every READY version, oldest first (``version`` is the newest)
    instances: int = 1  # model instances Triton runs (instance_group counts)
    preferred_batch: int = 0  # largest dynamic_batching.preferred_batch_size, 0 = none
    # when the gateway discovered it: OpenAI's ``created`` (Triton keeps no load time we can read)
    created: int = field(default_factory=lambda: int(time.time()), compare=False)
    _json: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def param(self, key: str, default: str | None = None) -> str | None:
        return self.parameters.get(key, default)

    def param_int(self, key: str, default: int | None = None) -> int | None:
        value = self.parameters.get(key)
        return int(value) if value else default

    def param_float(self, key: str, default: float | None = None) -> float | None:
        value = self.parameters.get(key)
        return float(value) if value else default

    def param_json(self, key: str, default: Any = None) -> Any:
        # Parsed once per discovered model, not on every request (labels, palettes, class lists).
        if key not in self._json:
            value = self.parameters.get(key)
            self._json[key] = json.loads(value) if value else None
        cached = self._json[key]
        return default if cached is None else cached

    @property
    def labels(self) -> list[str]:
        return list(self.param_json("labels", []) or [])

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "versions": list(self.versions or (self.version,)),  # READY ones, oldest first
            "task": self.task,
            "decoupled": self.decoupled,
            "max_batch_size": self.max_batch_size,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.dims)} for t in self.inputs],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.dims)} for t in self.outputs
            ],
            "parameters": {
                k: v for k, v in self.parameters.items() if k not in ("intra_op_threads", "device")
            },
        }


@dataclass
class InferResult:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]


class TritonError(errors.APIError):
    """A failed Triton call: the gateway's answer (status, code, message) and Triton's own."""

    def __init__(self, api: errors.APIError, rpc_code: grpc.StatusCode, rpc_details: str) -> None:
        super().__init__(api.status, api.code, api.message, api.headers)
        self.rpc_code, self.rpc_details = rpc_code, rpc_details


def map_rpc_error(exc: grpc.aio.AioRpcError, model: str = "") -> TritonError:
    """Translate a gRPC failure from Triton into the gateway's error shape, keeping Triton's."""
    code, detail = exc.code(), exc.details() or ""
    return TritonError(_gateway_error(code, detail, model), code, detail)


def _gateway_error(code: grpc.StatusCode, detail: str, model: str) -> errors.APIError:
    if code == grpc.StatusCode.UNAVAILABLE and (
        "connect" in detail.lower()
        or "socket" in detail.lower()
        or "unavailable" in detail.lower()
        or not detail
    ):
        return errors.upstream_unavailable("the inference server is unavailable; retry shortly")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.APIError(
            504, "upstream_timeout", "the inference server did not answer within the deadline"
        )
    if (
        code in (grpc.StatusCode.NOT_FOUND,)
        or "unknown model" in detail.lower()
        or "not found" in detail.lower()
    ):
        return errors.not_found("model_not_found", f"model {model!r} is not available: {detail}")
    if code == grpc.StatusCode.UNAVAILABLE:  # model not ready / loading / unloading
        return errors.upstream_unavailable(f"model {model!r} is not ready: {detail}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.unprocessable("invalid_input", detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.APIError(429, "upstream_overloaded", detail, headers={"Retry-After": "1"})
    if code == grpc.StatusCode.CANCELLED:
        return errors.APIError(499, "cancelled", "request cancelled")
    return errors.APIError(502, "upstream_error", f"inference server error ({code.name}): {detail}")


def _serialize_bytes(values: np.ndarray) -> bytes:
    """KServe BYTES tensor: each element as a 4-byte little-endian length + raw bytes."""
    out = bytearray()
    for v in values.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        out += len(b).to_bytes(4, "little") + b
    return bytes(out)


def _deserialize_bytes(raw: bytes) -> list[bytes]:
    items, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "little")
        items.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return items


def build_request(
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: dict[str, Any] | None = None,
) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, arr in inputs.items():
        tensor = req.inputs.add(name=name, shape=list(arr.shape))
        if arr.dtype == object or arr.dtype.kind in ("S", "U"):
            tensor.datatype = "BYTES"
            req.raw_input_contents.append(_serialize_bytes(arr))
        else:
            tensor.datatype = NP_TO_KSERVE[arr.dtype]
            req.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    for name in outputs or []:
        req.outputs.add(name=name)
    for key, value in (parameters or {}).items():
        p = req.parameters[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        else:
            p.string_param = str(value)
    return req


def parse_response(resp: pb.ModelInferResponse) -> InferResult:
    outs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(resp.outputs):
        raw = resp.raw_output_contents[i] if i < len(resp.raw_output_contents) else b""
        shape = tuple(tensor.shape)
        if tensor.datatype == "BYTES":
            outs[tensor.name] = np.array(_deserialize_bytes(raw), dtype=object).reshape(shape)
        else:
            outs[tensor.name] = np.frombuffer(raw, dtype=KSERVE_TO_NP[tensor.datatype]).reshape(shape)
    return InferResult(resp.model_name, resp.model_version, outs)


class TritonClient:
    """One gRPC channel to Triton, shared by every request of this gateway process."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.channel = grpc.aio.insecure_channel(url, options=GRPC_OPTIONS)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def _unary(self, method: str, message: Any, timeout: float | None, model: str = "") -> Any:
        try:
            return await getattr(self.stub, method)(message, timeout=timeout or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc, model) from None

    async def server_ready(self, timeout: float = 2.0) -> bool:
        try:
            return (await self.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout)).ready
        except grpc.aio.AioRpcError:
            return False

    async def model_ready(self, name: str, version: str = "", timeout: float = 2.0) -> bool:
        try:
            resp = await self.stub.ModelReady(
                pb.ModelReadyRequest(name=name, version=version), timeout=timeout
            )
            return resp.ready
        except grpc.aio.AioRpcError:
            return False

    async def server_metadata(self, timeout: float | None = None) -> pb.ServerMetadataResponse:
        return await self._unary("ServerMetadata", pb.ServerMetadataRequest(), timeout)

    async def model_metadata(
        self, name: str, version: str = "", timeout: float | None = None
    ) -> pb.ModelMetadataResponse:
        return await self._unary(
            "ModelMetadata", pb.ModelMetadataRequest(name=name, version=version), timeout, name
        )

    async def model_statistics(
        self, name: str = "", version: str = "", timeout: float | None = None
    ) -> pb.ModelStatisticsResponse:
        req = pb.ModelStatisticsRequest(name=name, version=version)
        return await self._unary("ModelStatistics", req, timeout, name)

    async def repository_index(
        self, timeout: float = 5.0, ready: bool = False
    ) -> list[pb.RepositoryIndexResponse.ModelIndex]:
        resp = await self._unary("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready), timeout)
        return list(resp.models)

    async def model_config(self, name: str, version: str = "", timeout: float | None = 5.0) -> Any:
        req = pb.ModelConfigRequest(name=name, version=version)
        return (await self._unary("ModelConfig", req, timeout, name)).config

    async def load(self, request: pb.RepositoryModelLoadRequest, timeout: float) -> None:
        await self._unary("RepositoryModelLoad", request, timeout, request.model_name)

    async def unload(self, request: pb.RepositoryModelUnloadRequest, timeout: float) -> None:
        await self._unary("RepositoryModelUnload", request, timeout, request.model_name)

    async def infer_request(
        self, request: pb.ModelInferRequest, timeout: float | None
    ) -> pb.ModelInferResponse:
        """A KServe request as built by a door (kserve.py, the gRPC door), Triton's answer unparsed."""
        try:
            return await self.stub.ModelInfer(request, timeout=timeout or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc, request.model_name) from None

    async def stream(
        self, requests: AsyncIterator[pb.ModelInferRequest], timeout: float | None, model: str = ""
    ) -> AsyncGenerator[pb.ModelStreamInferResponse]:
        """ModelStreamInfer, message by message; leaving the iteration cancels the call."""
        call = self.stub.ModelStreamInfer(requests, timeout=timeout)
        try:
            async for msg in call:
                yield msg
        except grpc.aio.AioRpcError as exc:
            raise map_rpc_error(exc, model) from None
        finally:
            call.cancel()

    async def discover(self, timeout: float = 5.0) -> dict[str, ModelInfo]:
        """Every READY model in Triton's repository, with its task facts from config parameters."""
        found: dict[str, ModelInfo] = {}
        ready: dict[str, list[str]] = {}  # the index lists one entry per version (two for a canary)
        for entry in await self.repository_index(timeout):
            if entry.state == "READY":
                ready.setdefault(entry.name, []).append(entry.version)
        for name, versions in ready.items():
            versions.sort(key=lambda v: (len(v), v))  # numeric order for digit strings
            cfg = await self.model_config(name, timeout=timeout)
            params = {k: v.string_value for k, v in cfg.parameters.items()}
            batched = cfg.max_batch_size > 0

            def tensors(items: Any) -> list[TensorInfo]:
                from tritonclient.grpc import model_config_pb2 as mc

                return [
                    TensorInfo(
                        t.name, CONFIG_TO_KSERVE.get(mc.DataType.Name(t.data_type), "BYTES"), tuple(t.dims)
                    )
                    for t in items
                ]

            found[name] = ModelInfo(
                name=name,
                version=versions[-1],
                versions=tuple(versions),
                task=params.get("task", "unknown"),
                inputs=tensors(cfg.input),
                outputs=tensors(cfg.output),
                max_batch_size=cfg.max_batch_size if batched else 0,
                parameters=params,
                decoupled=cfg.model_transaction_policy.decoupled,
                instances=max(1, sum(g.count or 1 for g in cfg.instance_group)),
                preferred_batch=max(cfg.dynamic_batching.preferred_batch_size, default=0),
            )
        return found

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str = "",
        timeout: float | None = None,
        request_id: str = "",
    ) -> InferResult:
        req = build_request(model, inputs, outputs, version, request_id)
        return parse_response(await self.infer_request(req, timeout))

    async def stream_infer(
        self, request: pb.ModelInferRequest, timeout: float | None = None
    ) -> AsyncIterator[InferResult]:
        """One request to a decoupled model over ModelStreamInfer; yields each response until the final one.

        Leaving the iteration early (the HTTP client went away) cancels the gRPC call, which
        Triton passes to the model as a cancelled request.
        """
        request.parameters["triton_enable_empty_final_response"].bool_param = True

        async def one() -> AsyncIterator[pb.ModelInferRequest]:
            yield request

        messages = self.stream(one(), timeout or self.timeout_s, request.model_name)
        try:
            async for msg in messages:
                if msg.error_message:
                    if "queue is full" in msg.error_message:  # the generator's max_pending: back off
                        raise errors.APIError(
                            429, "upstream_overloaded", msg.error_message, headers={"Retry-After": "1"}
                        )
                    if "unknown model" in msg.error_message.lower():  # e.g. a pinned version not served
                        raise errors.not_found("model_not_found", msg.error_message)
                    raise errors.APIError(502, "upstream_error", f"generation failed: {msg.error_message}")
                resp = msg.infer_response
                final = (
                    resp.parameters["triton_final_response"].bool_param
                    if "triton_final_response" in resp.parameters
                    else False
                )
                if resp.outputs:
                    yield parse_response(resp)
                if final:
                    return
        finally:
            await messages.aclose()  # cancels the call now, not when the generator is collected


class ModelCatalog:
    """The gateway's view of Triton's models: discovered at start-up, refreshed in the background.

    Refreshing keeps the gateway correct when Triton restarts or models are loaded/unloaded,
    without a gateway restart.
    """

    def __init__(
        self, client: TritonClient, refresh_s: float = 10.0, discovery_timeout_s: float = 5.0
    ) -> None:
        self.client = client
        self.refresh_s = refresh_s
        self.discovery_timeout_s = discovery_timeout_s
        self.models: dict[str, ModelInfo] = {}
        self.last_refresh = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        async with self._lock:
            try:
                self.models = await self.client.discover(self.discovery_timeout_s)
                self.last_refresh = time.monotonic()
                return True
            except TritonError as exc:
                log.warning("model discovery failed: %s", exc.rpc_code.name)
                return False

    async def _loop(self) -> None:
        while True:
            ok = await self.refresh()
            # Poll fast until Triton answers, then settle to the refresh interval.
            await asyncio.sleep(self.refresh_s if ok and self.models else 1.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="model-catalog-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def get(self, name: str) -> ModelInfo:
        if name not in self.models and time.monotonic() - self.last_refresh > 0.5:
            await self.refresh()
        if name not in self.models:
            if not self.models:
                raise errors.upstream_unavailable(
                    "no models are available yet; the inference server may be starting"
                )
            known = ", ".join(sorted(self.models))
            raise errors.not_found("model_not_found", f"model {name!r} is not served; available: {known}")
        return self.models[name]

    async def for_task(self, task: str, name: str | None = None) -> ModelInfo:
        """The named model (checked to be of ``task``), or the first served model of that task."""
        if name:
            info = await self.get(name)
            if info.task != task:
                raise errors.unprocessable("wrong_task", f"model {name!r} serves {info.task!r}, not {task!r}")
            return info
        if not any(m.task == task for m in self.models.values()):
            await self.refresh()
        candidates = sorted(m.name for m in self.models.values() if m.task == task)
        if not candidates:
            if not self.models:
                raise errors.upstream_unavailable(
                    "no models are available yet; the inference server may be starting"
                )
            raise errors.not_found("model_not_found", f"no served model performs {task!r}")
        return self.models[candidates[0]]
