"""KServe v2 (Open Inference Protocol) over HTTP, translated to and from Triton's gRPC messages.

The HTTP front door (``routes/kserve_http.py``) turns each JSON(+binary) inference request into
one ``ModelInferRequest`` for Triton's gRPC endpoint, and the answer back into the JSON(+binary)
body ``tritonclient.http`` expects. Why translate rather than proxy the body to Triton's HTTP
port: measured on the same machine it costs less gateway CPU per request than an httpx proxy
(README, "KServe front doors"), the gateway keeps one upstream (gRPC: one channel, deadlines and
cancellation carried to Triton), and every tensor goes through the same validators as the task
routes before Triton sees it.

Binary tensor extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes
followed by the inputs' raw bytes in input order, each input saying its ``binary_data_size``.
Outputs come back binary when the output asks ``"binary_data": true`` or the request sets
``"binary_data_output": true`` (what tritonclient does when it names no outputs).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb

from serving.gateway import errors, validation
from serving.gateway.triton import ModelInfo

# Supported protocol extensions (Triton's names); shared memory, repository control, tracing and
# logging are deliberately not reachable through the gateway (repository control is /admin).
EXTENSIONS = (
    "classification",
    "sequence",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "schedule_policy",
)
_HTTP_ONLY_PARAMS = frozenset({"binary_data_size", "binary_data", "binary_data_output"})
_SHM_PARAMS = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})


@dataclass
class OutputPlan:
    """How each output goes back: binary (appended after the JSON) or as JSON ``data``."""

    binary_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)
    client_id: str | None = None


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's request compression), bounded."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if wbits is None:
        raise errors.unsupported_media(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)  # the bound stops a decompression bomb
    except zlib.error:
        raise errors.bad_request("invalid_encoding", f"the body is not valid {encoding} data") from None
    if len(out) > limit:
        raise errors.too_large(f"decompressed body exceeds the limit of {limit} bytes")
    return out


def compress(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """Compress the answer only when the client asked for exactly what tritonclient asks for."""
    want = (accept_encoding or "").strip().lower()
    if want == "gzip":
        return gzip.compress(body, compresslevel=1), "gzip"
    if want == "deflate":
        return zlib.compress(body, 1), "deflate"
    return body, None


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header (a dict) and the binary tail of an inference request body."""
    if header_length is None:
        json_part, tail = body, memoryview(b"")
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise errors.bad_request(
                "invalid_header",
                f"Inference-Header-Content-Length {header_length!r} is not "
                f"a length within the body of {len(body)} bytes",
            )
        n = int(header_length)
        json_part, tail = body[:n], memoryview(body)[n:]
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request("invalid_json", f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise errors.bad_request("invalid_json", "the inference request must be a JSON object")
    return header, tail


def _set_param(target: Any, key: str, value: Any, where: str) -> None:
    p = target[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    elif isinstance(value, str):
        p.string_param = value
    else:
        raise errors.unprocessable(
            "invalid_parameter", f"{where} parameter {key!r} must be a bool, number or string"
        )


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise errors.unprocessable("invalid_parameter", f"{where}: parameters must be an object")
    if _SHM_PARAMS & params.keys():
        raise errors.unprocessable(
            "unsupported", f"{where}: shared memory is not available through the gateway"
        )
    return params


def _serialize_bytes(items: np.ndarray) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items.reshape(-1))


def build_request(
    header: dict[str, Any],
    tail: memoryview,
    model: str,
    version: str,
    request_id: str,
    info: ModelInfo | None,
    max_elements: int,
) -> tuple[pb.ModelInferRequest, OutputPlan]:
    """A validated ``ModelInferRequest`` from a KServe v2 JSON(+binary) request."""
    params = _params(header, "request")
    client_id = header.get("id")
    if client_id is not None and not isinstance(client_id, str):
        raise errors.unprocessable("invalid_parameter", "id must be a string")
    req = pb.ModelInferRequest(model_name=model, model_version=version, id=client_id or request_id)
    plan = OutputPlan(binary_default=params.get("binary_data_output") is True, client_id=client_id)
    for key, value in params.items():
        if key not in _HTTP_ONLY_PARAMS:
            _set_param(req.parameters, key, value, "request")

    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise errors.unprocessable("invalid_tensor", "inputs must be a non-empty list")
    expected = {t.name: t for t in info.inputs} if info else {}
    offset = 0
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.unprocessable("invalid_tensor", "each input needs a string name")
        name, datatype = item["name"], item.get("datatype")
        shape: Any = item.get("shape")  # validated by tensor_from_raw / tensor_from_json
        if not isinstance(datatype, str):
            raise errors.unprocessable("invalid_datatype", f"input {name!r}: datatype must be a string")
        iparams = _params(item, f"input {name!r}")
        size = iparams.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise errors.unprocessable(
                    "shape_mismatch",
                    f"input {name!r}: binary_data_size {size!r} does not fit "
                    f"the {len(tail)} bytes after the JSON header",
                )
            raw = tail[offset : offset + size]
            offset += size
            arr = validation.tensor_from_raw(name, datatype, shape, raw, max_elements)
            payload = bytes(raw)
        elif "data" in item:
            arr = validation.tensor_from_json(name, datatype, shape, item["data"], max_elements)
            payload = _serialize_bytes(arr) if datatype == "BYTES" else arr.tobytes()
        else:
            raise errors.unprocessable(
                "invalid_tensor", f"input {name!r} has neither data nor binary_data_size"
            )
        spec = expected.get(name)
        if spec is not None and info is not None:
            validation.check_tensor(name, arr, datatype, spec.datatype, spec.dims, info.max_batch_size > 0)
        tensor = req.inputs.add(name=name, datatype=datatype, shape=arr.shape)
        for key, value in iparams.items():
            if key not in _HTTP_ONLY_PARAMS:
                _set_param(tensor.parameters, key, value, f"input {name!r}")
        req.raw_input_contents.append(payload)
    if offset != len(tail):
        raise errors.unprocessable(
            "shape_mismatch", f"{len(tail)} bytes follow the JSON header but the inputs declare {offset}"
        )

    outputs = header.get("outputs") or []
    if not isinstance(outputs, list):
        raise errors.unprocessable("invalid_parameter", "outputs must be a list")
    for item in outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.unprocessable("invalid_parameter", "each requested output needs a string name")
        oparams = _params(item, f"output {item['name']!r}")
        out = req.outputs.add(name=item["name"])
        plan.binary[item["name"]] = oparams.get("binary_data", plan.binary_default) is True
        for key, value in oparams.items():
            if key not in _HTTP_ONLY_PARAMS:
                _set_param(out.parameters, key, value, f"output {item['name']!r}")
    return req, plan


def param_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


_JSON_DTYPES = {name: dt.newbyteorder("<") for name, dt in validation.KSERVE_NUMPY.items()}


def encode_response(resp: pb.ModelInferResponse, plan: OutputPlan) -> tuple[bytes, int | None]:
    """The KServe JSON(+binary) body and, when binary parts follow, the JSON header's length."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for i, t in enumerate(resp.outputs):
        raw = resp.raw_output_contents[i] if i < len(resp.raw_output_contents) else b""
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        params = {k: param_value(v) for k, v in t.parameters.items()}
        binary = plan.binary.get(t.name, plan.binary_default)
        if not binary:
            if t.datatype == "BYTES":
                try:
                    entry["data"] = [
                        b.decode("utf-8")
                        for b in validation.parse_bytes_tensor(t.name, raw, int(np.prod(t.shape)))
                    ]
                except UnicodeDecodeError:
                    binary = True  # not text: JSON cannot carry it, the binary extension can
            else:
                entry["data"] = np.frombuffer(raw, dtype=_JSON_DTYPES[t.datatype]).tolist()
        if binary:
            params["binary_data_size"] = len(raw)
            chunks.append(raw)
        if params:
            entry["parameters"] = params
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version}
    if plan.client_id:
        body["id"] = plan.client_id
    if resp.parameters:
        body["parameters"] = {k: param_value(v) for k, v in resp.parameters.items()}
    body["outputs"] = outputs
    head = orjson.dumps(body)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def model_metadata(resp: pb.ModelMetadataResponse) -> dict[str, Any]:
    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": resp.name,
        "versions": list(resp.versions),
        "platform": resp.platform,
        "inputs": tensors(resp.inputs),
        "outputs": tensors(resp.outputs),
    }


def visible_index(
    index: list[pb.RepositoryIndexResponse.ModelIndex],
) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    """The repository index a public caller may see: the READY versions, i.e. what the gateway
    serves. Models that failed to load or were unloaded, and their reasons (paths, tracebacks), are
    for operators (``GET /admin/models``)."""
    return [m for m in index if m.state == "READY"]


def message_to_json(msg: Message) -> dict[str, Any]:
    """A protobuf message as Triton's HTTP API writes it: proto field names, defaults included,
    64-bit integers as JSON numbers (``json_format`` would write them as strings)."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            out[f.name] = {k: _scalar(vf, v) for k, v in value.items()}
        elif f.is_repeated:
            out[f.name] = [_scalar(f, v) for v in value]
        elif not f.has_presence or msg.HasField(f.name):
            out[f.name] = _scalar(f, value)
    return out


def _scalar(f: FieldDescriptor, v: Any) -> Any:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_json(v)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values_by_number[v].name
    if f.type == FieldDescriptor.TYPE_BYTES:
        import base64

        return base64.b64encode(v).decode()
    return v
