"""Pure logic of the front doors and the lifecycle: version routing, the KServe codec, admin auth."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from serving.gateway import errors, kserve
from serving.gateway.main import create_app
from serving.gateway.settings import Settings
from serving.gateway.triton import ModelInfo, TensorInfo
from serving.gateway.versions import TrafficSplit, VersionRouter
from tests.support.procs import free_port


def info(*versions: str) -> ModelInfo:
    return ModelInfo(
        name="m",
        version=versions[-1],
        task="classification",
        inputs=[TensorInfo("image", "UINT8", (1, 4, 4))],
        outputs=[TensorInfo("probs", "FP32", (3,))],
        max_batch_size=8,
        versions=versions,
    )


def no_header(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------- versions


def test_split_validation() -> None:
    with pytest.raises(ValidationError):
        TrafficSplit(stable="1", canary="1", canary_percent=10)
    with pytest.raises(ValidationError):
        TrafficSplit(stable="1", canary="x", canary_percent=10)
    with pytest.raises(ValidationError):
        TrafficSplit(stable="1", canary="2", canary_percent=-1)
    assert (
        TrafficSplit(stable="1", canary="2", canary_percent=5, sticky_header="X-Canary-Key").sticky_header
        == "x-canary-key"
    )


def test_no_split_leaves_the_choice_to_triton_and_pins_win() -> None:
    r = VersionRouter()
    assert r.choose("m", info("1", "2"), None, no_header) == ""
    r.splits["m"] = TrafficSplit(stable="1", canary="2", canary_percent=100)
    assert r.choose("m", info("1", "2"), "1", no_header) == "1"


def test_split_shares_and_fallbacks() -> None:
    r = VersionRouter()
    r.splits["m"] = TrafficSplit(stable="1", canary="2", canary_percent=25)
    counts = Counter(r.choose("m", info("1", "2"), None, no_header) for _ in range(4000))
    assert abs(counts["2"] / 4000 - 0.25) < 0.04
    assert {r.choose("m", info("1"), None, no_header) for _ in range(50)} == {"1"}  # canary not READY
    assert {r.choose("m", info("2"), None, no_header) for _ in range(50)} == {"2"}  # stable gone
    assert r.choose("m", info("3"), None, no_header) == "3"  # neither: the newest that is READY


def test_sticky_split_is_deterministic_and_spread() -> None:
    r = VersionRouter()
    r.splits["m"] = TrafficSplit(stable="1", canary="2", canary_percent=50, sticky_header="x-canary-key")
    picks = {}
    for i in range(400):

        def header(name: str, key: str = f"user-{i}") -> str | None:
            return key if name == "x-canary-key" else None

        picks[i] = {r.choose("m", info("1", "2"), None, header) for _ in range(3)}
    assert all(len(p) == 1 for p in picks.values())
    share = sum("2" in p for p in picks.values()) / len(picks)
    assert 0.4 < share < 0.6


def test_restriction_keeps_traffic_off_leaving_versions() -> None:
    r = VersionRouter()
    r.restricted["m"] = frozenset({"1"})
    assert r.choose("m", info("1", "2"), None, no_header) == "1"  # Triton's newest (2) is leaving


# ---------------------------------------------------------------------------------------------- codec


def test_binary_and_json_inputs_build_one_grpc_request() -> None:
    x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    head = {
        "inputs": [
            {
                "name": "image",
                "shape": [1, 1, 4, 4],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": 16},
            }
        ],
        "outputs": [{"name": "probs", "parameters": {"binary_data": True, "classification": 2}}],
        "parameters": {"priority": 1},
        "id": "r1",
    }
    raw = orjson.dumps(head)
    header, tail = kserve.split_body(raw + x.tobytes(), str(len(raw)))
    req, plan = kserve.build_request(header, tail, "m", "2", "gw-id", info("1", "2"), 1000)
    assert req.model_version == "2" and req.id == "r1" and req.raw_input_contents[0] == x.tobytes()
    assert req.outputs[0].parameters["classification"].int64_param == 2
    assert "binary_data" not in req.outputs[0].parameters and req.parameters["priority"].int64_param == 1
    assert plan.binary == {"probs": True}
    jhead = {"inputs": [{"name": "image", "shape": [1, 1, 4, 4], "datatype": "UINT8", "data": x.tolist()}]}
    req2, plan2 = kserve.build_request(jhead, memoryview(b""), "m", "", "gw-id", None, 1000)
    assert req2.raw_input_contents[0] == x.tobytes() and req2.id == "gw-id" and not plan2.binary_default


def test_bytes_tensors_both_ways() -> None:
    head = {"inputs": [{"name": "prompt", "shape": [2], "datatype": "BYTES", "data": ["hi", "h\u00e9"]}]}
    req, _ = kserve.build_request(head, memoryview(b""), "m", "", "", None, 1000)
    assert req.raw_input_contents[0] == b"\x02\x00\x00\x00hi\x03\x00\x00\x00h\xc3\xa9"
    resp = pb.ModelInferResponse(model_name="m", model_version="1")
    resp.outputs.add(name="text", datatype="BYTES", shape=[2])
    resp.raw_output_contents.append(req.raw_input_contents[0])
    body, hlen = kserve.encode_response(resp, kserve.OutputPlan())
    assert hlen is None and json.loads(body)["outputs"][0]["data"] == ["hi", "h\u00e9"]


@pytest.mark.parametrize(
    ("head", "tail", "code"),
    [
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 1, 4, 4],
                        "datatype": "UINT8",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            b"\0" * 15,
            "shape_mismatch",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, 4, 4], "datatype": "UINT8", "data": [1] * 16}]},
            b"\0",
            "shape_mismatch",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 1, 4, 4],
                        "datatype": "UINT8",
                        "parameters": {"shared_memory_region": "r"},
                    }
                ]
            },
            b"",
            "unsupported",
        ),
        (
            {"inputs": [{"name": "image", "shape": [2, 1, 4, 4], "datatype": "UINT8", "data": [300] * 32}]},
            b"",
            "value_out_of_range",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1, 1, 5, 4], "datatype": "UINT8", "data": [1] * 20}]},
            b"",
            "shape_mismatch",
        ),
    ],
)
def test_bad_tensors_are_4xx(head: dict, tail: bytes, code: str) -> None:
    with pytest.raises(errors.APIError) as err:
        kserve.build_request(head, memoryview(tail), "m", "", "", info("1"), 1000)
    assert 400 <= err.value.status < 500 and err.value.code == code


def test_response_json_and_binary_and_non_utf8_bytes() -> None:
    resp = pb.ModelInferResponse(model_name="m", model_version="2")
    resp.outputs.add(name="probs", datatype="FP32", shape=[1, 3])
    resp.raw_output_contents.append(np.array([0.5, 0.25, 0.25], "<f4").tobytes())
    resp.outputs.add(name="tag", datatype="BYTES", shape=[1])
    resp.raw_output_contents.append(len(b"\xff\xfe").to_bytes(4, "little") + b"\xff\xfe")
    body, hlen = kserve.encode_response(resp, kserve.OutputPlan())
    head = json.loads(body[:hlen])
    assert head["outputs"][0]["data"] == [0.5, 0.25, 0.25]
    assert head["outputs"][1]["parameters"]["binary_data_size"] == 6  # not text: sent binary instead
    body, hlen = kserve.encode_response(resp, kserve.OutputPlan(binary_default=True))
    head = json.loads(body[:hlen])
    assert np.frombuffer(body[hlen : hlen + 12], "<f4").tolist() == [0.5, 0.25, 0.25]


def test_decompression_is_bounded() -> None:
    assert kserve.decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    with pytest.raises(errors.APIError) as err:
        kserve.decompress(gzip.compress(b"\0" * 10_000), "gzip", 100)
    assert err.value.status == 413
    with pytest.raises(errors.APIError):
        kserve.decompress(b"not gzip", "gzip", 100)


def test_config_json_keeps_64_bit_numbers() -> None:
    cfg = mc.ModelConfig(name="m", backend="python", max_batch_size=0)
    cfg.input.add(name="x", data_type=mc.TYPE_UINT8, dims=[-1, 3])
    out = kserve.message_to_json(cfg)
    assert out["input"][0]["dims"] == [-1, 3] and out["input"][0]["data_type"] == "TYPE_UINT8"
    assert out["max_batch_size"] == 0 and "version_policy" not in out  # unset oneof-like message left out


# ---------------------------------------------------------------------------------------------- admin


@pytest.fixture()
def admin_client() -> Iterator[TestClient]:
    settings = Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        discovery_timeout_s=0.3,
        triton_timeout_s=1.0,
        admin_key="secret",
        request_log=False,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_admin_key_checks(admin_client: TestClient) -> None:
    assert admin_client.get("/admin/models").status_code == 401
    assert admin_client.get("/admin/models", headers={"X-Admin-Key": "nope"}).status_code == 403
    r = admin_client.put(
        "/admin/models/m/traffic",
        headers={"X-Admin-Key": "secret"},
        json={"stable": "1", "canary": "2", "canary_percent": 10},
    )
    assert r.status_code == 200 and r.json()["traffic"]["canary"] == "2" and r.json()["warnings"]
    assert admin_client.get("/admin/models/m/traffic", headers={"X-Admin-Key": "secret"}).json()["traffic"]
    assert "/admin/models" not in admin_client.get("/openapi.json").json()["paths"]


def test_admin_off_without_a_key() -> None:
    settings = Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}", discovery_timeout_s=0.3, request_log=False
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/admin/models", headers={"X-Admin-Key": ""})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


# ---------------------------------------------------------------------------------------------- export


def test_generated_config_serves_two_versions_at_once(tmp_path: Path) -> None:
    from export.onnx_export import TensorSpec
    from export.repository import RepositoryModel, validate_config_text, write_model

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"v1")
    model = RepositoryModel(
        name="clf",
        task="classification",
        inputs=[TensorSpec("image", "uint8", [-1, 1, 4, 4])],
        outputs=[TensorSpec("probs", "float32", [-1, 3])],
        files={"model.onnx": onnx_file},
        card={"metrics": {"test_accuracy": 0.9}},
    )
    repo = tmp_path / "repo"
    write_model(repo, "cpu", model)
    onnx_file.write_bytes(b"v2")  # retrained
    v2 = write_model(repo, "cpu", model)
    cfg = validate_config_text((repo / "clf" / "config.pbtxt").read_text())
    assert cfg.version_policy.latest.num_versions == 2 and v2.name == "2"
    card = json.loads((v2 / "model_card.json").read_text())
    assert card["version"] == 2 and card["metrics"] == {"test_accuracy": 0.9} and card["exported_at"]
    model.serve_versions = 0
    write_model(repo, "cpu", model)
    assert validate_config_text((repo / "clf" / "config.pbtxt").read_text()).version_policy.HasField("all")
