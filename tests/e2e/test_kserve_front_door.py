"""The KServe v2 front doors of the gateway, driven by the stock tritonclient (HTTP and gRPC), unchanged.

Real Triton (explicit model control, two versions of the classifier, a decoupled streaming model)
and the real gateway over sockets; every answer is compared with Triton's own.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as gc
import tritonclient.http as hc
from tritonclient.utils import InferenceServerException

from tests.support import procs
from tests.support.stack import Stack, add_stream_model, export_classifier_version, start_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    repo = tmp_path_factory.mktemp("frontdoor-repo")
    assert export_classifier_version(repo) == "1"
    assert export_classifier_version(repo, variant=1) == "2"  # other weights: a second version
    add_stream_model(repo)
    s = start_stack(repo, tmp_path_factory.mktemp("frontdoor"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from training.data.digits import load_digits_splits

    data = load_digits_splits(32)
    return data.x_test[:8], data.y_test[:8]


def hosts(s: Stack) -> tuple[str, str]:
    return s.url.removeprefix("http://"), s.triton.http_url


# ---------------------------------------------------------------------------------------------- HTTP


def test_http_health_and_server_metadata(stack: Stack) -> None:
    c = hc.InferenceServerClient(hosts(stack)[0])
    assert c.is_server_live() and c.is_server_ready()
    meta = c.get_server_metadata()
    assert meta["name"] == "triton" and "binary_tensor_data" in meta["extensions"]
    assert "classification" in meta["extensions"]
    # What the gateway does not serve is not advertised.
    assert not {"model_repository", "system_shared_memory", "cuda_shared_memory"} & set(meta["extensions"])


def test_http_metadata_and_config_match_triton_for_every_model(stack: Stack) -> None:
    gw, direct = (hc.InferenceServerClient(h) for h in hosts(stack))
    names = [m["name"] for m in httpx.get(f"{stack.url}/v1/models").json()["models"]]
    assert {"classifier", "countdown"} <= set(names)
    for name in names:
        assert gw.is_model_ready(name)
        assert gw.get_model_metadata(name) == direct.get_model_metadata(name)
        assert gw.get_model_config(name) == direct.get_model_config(name)  # int64 dims stay numbers
    assert gw.get_model_metadata("classifier")["versions"] == ["1", "2"]
    assert gw.get_model_metadata("classifier", "1")["versions"] == ["1"]
    assert gw.is_model_ready("classifier", "1") and not gw.is_model_ready("classifier", "9")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_matches_triton(stack: Stack, digits: tuple[np.ndarray, np.ndarray], binary: bool) -> None:
    x, y = digits
    gw, direct = (hc.InferenceServerClient(h) for h in hosts(stack))
    inp = hc.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = [hc.InferRequestedOutput("probs", binary_data=binary)]
    for version in ("1", "2"):
        got = gw.infer("classifier", [inp], model_version=version, outputs=out)
        want = direct.infer("classifier", [inp], model_version=version, outputs=out)
        assert got.get_response()["model_version"] == version
        np.testing.assert_allclose(got.as_numpy("probs"), want.as_numpy("probs"), rtol=0, atol=1e-6)
        assert (got.as_numpy("probs").argmax(1) == y).mean() >= 0.75
    # No outputs named: tritonclient asks for all of them as binary (binary_data_output).
    assert gw.infer("classifier", [inp]).as_numpy("probs").shape == (len(x), 10)


def test_http_classification_extension(stack: Stack, digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = digits
    gw, direct = (hc.InferenceServerClient(h) for h in hosts(stack))
    inp = hc.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    for binary in (True, False):
        out = [hc.InferRequestedOutput("probs", binary_data=binary, class_count=3)]
        got = gw.infer("classifier", [inp], model_version="1", outputs=out).as_numpy("probs")
        want = direct.infer("classifier", [inp], model_version="1", outputs=out).as_numpy("probs")
        assert got.shape == (len(x), 3) and got.tolist() == want.tolist()  # "score:index:label"


def test_http_answers_say_the_version(stack: Stack) -> None:
    body = {"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "UINT8", "data": [0] * 1024}]}
    r = httpx.post(f"{stack.url}/v2/models/classifier/versions/1/infer", json=body)
    assert r.status_code == 200 and r.headers["x-model-version"] == "1" == r.json()["model_version"]
    r = httpx.post(f"{stack.url}/v2/models/classifier/infer", json=body)
    assert r.headers["x-model-version"] == r.json()["model_version"] == "2"  # no pin, no split: the newest


# KServe has no 422: a request Triton cannot use is a 400 (test_kserve_conformance.py holds the doors to
# Triton's own codes); the body is KServe's {"error": "<message>"}, messages ours.
@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"inputs": []}).encode(), 400, "non-empty list"),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "image", "shape": [1, 1, 32, 32], "datatype": "UINT8", "data": [0] * 10}
                    ]
                }
            ).encode(),
            400,
            "10 values for shape",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.5] * 1024}
                    ]
                }
            ).encode(),
            400,
            "the model takes UINT8",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [1, 1, 32, 32],
                            "datatype": "UINT8",
                            "parameters": {"binary_data_size": 5000},
                        }
                    ]
                }
            ).encode(),
            400,
            "binary_data_size 5000",
        ),
    ],
)
def test_http_bad_requests_get_json_4xx(stack: Stack, body: bytes, status: int, says: str) -> None:
    r = httpx.post(
        f"{stack.url}/v2/models/classifier/infer", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert says in r.json()["error"]


def test_http_infer_on_a_decoupled_model_is_501(stack: Stack) -> None:
    # Triton's HTTP endpoint answers 501 too; ours says where streaming lives.
    body = {"inputs": [{"name": "N", "shape": [1], "datatype": "INT32", "data": [3]}]}
    r = httpx.post(f"{stack.url}/v2/models/countdown/infer", json=body)
    assert r.status_code == 501 and "ModelStreamInfer" in r.json()["error"]


def test_http_unknown_model_and_repository_control(stack: Stack) -> None:
    c = hc.InferenceServerClient(hosts(stack)[0])
    inp = hc.InferInput("image", [1, 1, 32, 32], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.uint8))
    with pytest.raises(InferenceServerException) as err:
        c.infer("nope", [inp])
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:  # model control is the admin API's, not the public's
        c.unload_model("classifier")
    assert err.value.status() == "403"
    assert c.is_model_ready("classifier")


# ---------------------------------------------------------------------------------------------- gRPC


def test_grpc_metadata_and_config_match_triton_for_every_model(stack: Stack) -> None:
    gw, direct = gc.InferenceServerClient(stack.grpc_url), gc.InferenceServerClient(stack.triton.grpc_url)
    assert gw.is_server_live() and gw.is_server_ready()
    assert "model_repository" not in gw.get_server_metadata().extensions
    for name in ("classifier", "countdown"):
        assert gw.is_model_ready(name)
        assert gw.get_model_metadata(name) == direct.get_model_metadata(name)
        assert gw.get_model_config(name) == direct.get_model_config(name)


def test_grpc_infer_matches_triton(stack: Stack, digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = digits
    gw, direct = gc.InferenceServerClient(stack.grpc_url), gc.InferenceServerClient(stack.triton.grpc_url)
    inp = gc.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    for version in ("1", "2"):
        got = gw.infer("classifier", [inp], model_version=version)
        want = direct.infer("classifier", [inp], model_version=version)
        assert got.get_response().model_version == version
        np.testing.assert_array_equal(got.as_numpy("probs"), want.as_numpy("probs"))
    assert gw.infer("classifier", [inp]).get_response().model_version == "2"
    cls = [gc.InferRequestedOutput("probs", class_count=2)]
    assert (
        gw.infer("classifier", [inp], outputs=cls).as_numpy("probs").tolist()
        == direct.infer("classifier", [inp], outputs=cls).as_numpy("probs").tolist()
    )


def test_grpc_errors_keep_their_codes(stack: Stack) -> None:
    gw = gc.InferenceServerClient(stack.grpc_url)
    inp = gc.InferInput("image", [1, 1, 32, 32], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.uint8))
    with pytest.raises(InferenceServerException) as err:
        gw.infer("nope", [inp])
    assert "StatusCode.NOT_FOUND" in str(err.value.status()) or "unknown model" in err.value.message()
    bad = gc.InferInput("image", [1, 1, 32, 32], "FP32")
    bad.set_data_from_numpy(np.full((1, 1, 32, 32), np.nan, np.float32))
    with pytest.raises(InferenceServerException) as err:  # refused by the gateway's validators
        gw.infer("classifier", [bad])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as err:
        gw.unload_model("classifier")
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    # The index is read-only and public: the served models.
    assert {m.name for m in gw.get_model_repository_index().models} == {"classifier", "countdown"}


def _stream_until_final(q: queue.Queue, timeout: float = 30.0) -> tuple[list[int], list[str]]:
    values: list[int] = []
    errs: list[str] = []
    while True:
        result, error = q.get(timeout=timeout)
        if error is not None:
            errs.append(str(error))
            return values, errs
        resp = result.get_response()
        if resp.outputs:
            values.append(int(result.as_numpy("OUT")[0]))
        if resp.parameters["triton_final_response"].bool_param:
            return values, errs


def test_grpc_bidirectional_stream_of_a_decoupled_model(stack: Stack) -> None:
    gw = gc.InferenceServerClient(stack.grpc_url)
    q: queue.Queue = queue.Queue()
    gw.start_stream(callback=lambda result, error: q.put((result, error)))
    try:

        def ask(model: str, n: int, rid: str) -> None:
            inp = gc.InferInput("N", [1], "INT32")
            inp.set_data_from_numpy(np.array([n], np.int32))
            gw.async_stream_infer(model, [inp], request_id=rid, enable_empty_final_response=True)

        ask("countdown", 5, "a")
        assert _stream_until_final(q) == ([4, 3, 2, 1, 0], [])
        ask("nope", 1, "b")  # an error travels on the stream; the stream stays open
        values, errs = _stream_until_final(q)
        assert not values and errs
        ask("countdown", 3, "c")
        assert _stream_until_final(q) == ([2, 1, 0], [])
    finally:
        gw.stop_stream()


# ---------------------------------------------------------------------------------------------- both


def test_same_api_keys_on_http_and_grpc(stack: Stack, tmp_path: Path) -> None:
    """A gateway with API keys: the guard's checks apply to both front doors."""
    grpc_port = procs.free_port()
    keyed = procs.start_gateway(
        stack.triton.grpc_url,
        tmp_path,
        wait_ready=False,
        env={"GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_API_KEYS": "k1", "GATEWAY_REQUEST_LOG": "false"},
    )
    try:
        url = keyed.url
        assert httpx.get(f"{url}/v2/models/classifier").status_code == 401
        assert httpx.get(f"{url}/v2/models/classifier", headers={"X-API-Key": "k1"}).status_code == 200
        c = gc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert c.is_server_ready()  # probes need no key, as /v2/health/ready on HTTP
        with pytest.raises(InferenceServerException) as err:
            c.get_model_metadata("classifier")
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        assert c.get_model_metadata("classifier", headers={"authorization": "Bearer k1"}).name == "classifier"
        with pytest.raises(InferenceServerException):
            c.get_model_metadata("classifier", headers={"x-api-key": "wrong"})
    finally:
        keyed.stop()


def test_metrics_label_both_front_doors(stack: Stack) -> None:
    gw = gc.InferenceServerClient(stack.grpc_url)
    inp = gc.InferInput("image", [1, 1, 32, 32], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.uint8))
    gw.infer("classifier", [inp])
    body = {"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "UINT8", "data": [0] * 1024}]}
    assert httpx.post(f"{stack.url}/v2/models/classifier/infer", json=body).status_code == 200
    lines = httpx.get(f"{stack.url}/metrics").text.splitlines()
    assert 'gateway_requests_total{model="classifier",route="grpc:ModelInfer",status="200"}' in {
        line.rsplit(" ", 1)[0] for line in lines
    }
    assert any(
        line.startswith("gateway_requests_total") and 'route="/v2/models/{name}/infer"' in line
        for line in lines
    )
    assert any(
        line.startswith("gateway_request_duration_seconds_bucket") and 'route="grpc:ModelInfer"' in line
        for line in lines
    )
