"""KServe v2 conformance of the gateway's doors, measured against Triton itself.

Every call runs twice with the stock ``tritonclient`` (HTTP and gRPC; sync, and aio for a few):
once against Triton directly, once against the gateway's door of the same protocol (the ``door``
parameter), and the two outcomes must be the same: the same result, or an error with the same
status code in KServe's error form (``{"error": "<message>"}`` on HTTP, which tritonclient reads;
the messages may be ours). Cases: health, server and model metadata, config, statistics, the
repository index (read-only, the served models only), inference with JSON and binary tensors,
unknown model, bad shape, bad datatype, a decoupled model over unary calls, and decoupled
streaming over gRPC (the text generator). Repository load/unload is refused on the doors.

One real Triton (explicit model control) serving the tiny classifier, the tiny GPT text generator
and the decoupled ``countdown`` test model, and one real gateway, over sockets.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as gc
import tritonclient.grpc.aio as gca
import tritonclient.http as hc
import tritonclient.http.aio as hca
from tritonclient.utils import InferenceServerException

from tests.support import models, procs
from tests.support.stack import Stack, add_stream_model, start_stack
from tests.support.text_models import text_checkpoint

pytestmark = pytest.mark.slow

SHAPE = [1, 1, 32, 32]  # the classifier's input: N x 1 x 32 x 32 uint8


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    repo = tmp_path_factory.mktemp("conformance-repo")
    ckpts = {"classifier": models.classifier_checkpoint(), "gpt": text_checkpoint("gpt")}
    models.build_repository(repo, ckpts, targets=("cpu",))
    add_stream_model(repo)
    s = start_stack(repo, tmp_path_factory.mktemp("conformance"))
    yield s
    s.stop()


@dataclass(frozen=True)
class Door:
    """One protocol: Triton's endpoint and the gateway's door for it."""

    proto: str  # "http" | "grpc"
    triton: str
    gateway: str

    @property
    def sync(self) -> Any:
        return hc if self.proto == "http" else gc

    @property
    def aio(self) -> Any:
        return hca if self.proto == "http" else gca

    def clients(self) -> tuple[Any, Any]:
        """(Triton direct, the gateway's door), sync clients."""
        return self.sync.InferenceServerClient(self.triton), self.sync.InferenceServerClient(self.gateway)


@pytest.fixture(params=["http", "grpc"], ids=["http-door", "grpc-door"])
def door(request: pytest.FixtureRequest, stack: Stack) -> Door:
    if request.param == "http":
        return Door("http", stack.triton.http_url, stack.url.removeprefix("http://"))
    return Door("grpc", stack.triton.grpc_url, stack.grpc_url)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", status); an error must be readable (KServe's error form)."""
    try:
        return "ok", call()
    except InferenceServerException as exc:
        # A body in another shape makes tritonclient.http raise `<exception str() failed>`.
        assert isinstance(exc.message(), str), f"unreadable error body: {exc.message()!r}"
        assert "exception occurred in the client" not in exc.message(), exc.message()
        str(exc)
        return "error", exc.status()


def same(door: Door, call: Callable[[Any], Any]) -> tuple[str, Any]:
    """Run ``call(client)`` against Triton, then the gateway; the outcomes must be equal."""
    direct, gateway = door.clients()
    want = outcome(lambda: call(direct))
    got = outcome(lambda: call(gateway))
    assert got == want
    return got


def image_input(door: Door, x: np.ndarray, datatype: str = "UINT8", binary: bool = True) -> Any:
    inp = door.sync.InferInput("image", list(x.shape), datatype)
    if door.proto == "http":
        inp.set_data_from_numpy(x, binary_data=binary)
    else:
        inp.set_data_from_numpy(x)
    return inp


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from training.data.digits import load_digits_splits

    return load_digits_splits(32).x_test[:8]


# ---------------------------------------------------------------------------------------- health, metadata


def test_health(door: Door) -> None:
    for call in (
        lambda c: c.is_server_live(),
        lambda c: c.is_server_ready(),
        lambda c: c.is_model_ready("classifier"),
        lambda c: c.is_model_ready("classifier", "1"),
        lambda c: c.is_model_ready("classifier", "9"),
        lambda c: c.is_model_ready("nope"),
    ):
        same(door, call)


def test_server_metadata(door: Door) -> None:
    direct, gateway = (c.get_server_metadata() for c in door.clients())
    field = (lambda m, k: m[k]) if door.proto == "http" else getattr
    assert field(gateway, "name") == field(direct, "name")
    assert field(gateway, "version") == field(direct, "version")
    # The gateway advertises what it serves: a subset of Triton's extensions, without model control.
    ext = set(field(gateway, "extensions"))
    assert {"binary_tensor_data", "classification", "model_configuration"} <= ext
    assert ext <= set(field(direct, "extensions")) and "model_repository" not in ext


@pytest.mark.parametrize("name", ["classifier", "gpt", "countdown", "nope"])
def test_model_metadata_and_config(door: Door, name: str) -> None:
    for version in ("", "1", "9"):
        same(door, lambda c, v=version: c.get_model_metadata(name, v))
        same(door, lambda c, v=version: c.get_model_config(name, v))


# ---------------------------------------------------------------------------------------- statistics, index


def _stats(door: Door, client: Any, name: str, version: str = "") -> Any:
    if door.proto == "grpc":
        return client.get_inference_statistics(name, version, as_json=True)
    return client.get_inference_statistics(name, version)


@pytest.mark.parametrize("name", ["classifier", "gpt", "", "nope"], ids=["classifier", "gpt", "all", "nope"])
def test_statistics(door: Door, name: str) -> None:
    # Back to back with nothing in between: the same counters from both.
    kind, stats = same(door, lambda c: _stats(door, c, name))
    if name in ("classifier", "gpt"):
        assert kind == "ok" and [s["name"] for s in stats["model_stats"]] == [name]
    same(door, lambda c: _stats(door, c, "classifier", "9"))


def _index(door: Door, client: Any) -> list[dict[str, str]]:
    if door.proto == "http":
        return client.get_model_repository_index()
    return client.get_model_repository_index(as_json=True).get("models", [])


def test_repository_index(door: Door) -> None:
    kind, index = same(door, lambda c: _index(door, c))
    assert kind == "ok" and {(m["name"], m["state"]) for m in index} == {
        ("classifier", "READY"),
        ("countdown", "READY"),
        ("gpt", "READY"),
    }


def test_repository_index_lists_only_what_is_served(stack: Stack) -> None:
    """An unloaded model stays in Triton's index (UNAVAILABLE, with a reason); the doors list only the
    READY ones."""
    with stack.admin() as admin:
        assert admin.post("/admin/models/countdown/unload").status_code == 200
        try:
            for door in (
                Door("http", stack.triton.http_url, stack.url.removeprefix("http://")),
                Door("grpc", stack.triton.grpc_url, stack.grpc_url),
            ):
                direct, gateway = (_index(door, c) for c in door.clients())
                assert any(m["name"] == "countdown" and m["state"] != "READY" for m in direct)
                assert gateway == [m for m in direct if m["state"] == "READY"]
                assert all(set(m) == {"name", "version", "state"} for m in gateway)  # no reasons
        finally:
            assert admin.post("/admin/models/countdown/load").status_code == 200


# ---------------------------------------------------------------------------------------- inference


def test_infer_results(door: Door, digits: np.ndarray) -> None:
    direct, gateway = door.clients()
    for binary in (True, False) if door.proto == "http" else (True,):  # gRPC tensors are raw bytes
        inputs = [image_input(door, digits, binary=binary)]
        kw: dict[str, Any] = {}
        if door.proto == "http":
            kw["outputs"] = [hc.InferRequestedOutput("probs", binary_data=binary)]
        want, got = (c.infer("classifier", inputs, **kw) for c in (direct, gateway))
        np.testing.assert_allclose(got.as_numpy("probs"), want.as_numpy("probs"), rtol=0, atol=1e-6)
        assert got.as_numpy("probs").shape == (len(digits), 10)
        # No outputs named: all of them (binary on HTTP: tritonclient sets binary_data_output).
        want, got = (c.infer("classifier", inputs, model_version="1") for c in (direct, gateway))
        np.testing.assert_array_equal(got.as_numpy("probs"), want.as_numpy("probs"))
        # The classification extension: "score:index:label" strings.
        if door.proto == "http":
            cls = [hc.InferRequestedOutput("probs", binary_data=binary, class_count=3)]
        else:
            cls = [gc.InferRequestedOutput("probs", class_count=3)]
        want, got = (c.infer("classifier", inputs, outputs=cls) for c in (direct, gateway))
        assert got.as_numpy("probs").tolist() == want.as_numpy("probs").tolist()


def _bad(door: Door, case: str) -> Callable[[Any], Any]:
    if case == "unknown_model":
        return lambda c: c.infer("nope", [image_input(door, np.zeros(SHAPE, np.uint8))])
    if case == "unknown_version":
        return lambda c: c.infer("classifier", [image_input(door, np.zeros(SHAPE, np.uint8))], "9")
    if case == "bad_shape":  # a well-formed tensor of a shape the model does not take
        return lambda c: c.infer("classifier", [image_input(door, np.zeros([1, 1, 32, 31], np.uint8))])
    if case == "bad_datatype":
        return lambda c: c.infer("classifier", [image_input(door, np.zeros(SHAPE, np.float32), "FP32")])
    if case == "unknown_input":
        inp = door.sync.InferInput("pixels", SHAPE, "UINT8")
        inp.set_data_from_numpy(np.zeros(SHAPE, np.uint8))
        return lambda c: c.infer("classifier", [inp])
    assert case == "decoupled_unary"  # Triton: HTTP 501, gRPC UNIMPLEMENTED
    inp = door.sync.InferInput("N", [1], "INT32")
    inp.set_data_from_numpy(np.array([3], np.int32))
    return lambda c: c.infer("countdown", [inp])


@pytest.mark.parametrize(
    "case",
    ["unknown_model", "unknown_version", "bad_shape", "bad_datatype", "unknown_input", "decoupled_unary"],
)
def test_infer_errors(door: Door, case: str) -> None:
    kind, status = same(door, _bad(door, case))
    assert kind == "error", status


def test_http_error_form(stack: Stack) -> None:
    """Raw HTTP: every refusal is KServe's ``{"error": "<message>"}`` with Triton's status code."""
    img = {"name": "image", "shape": SHAPE, "datatype": "UINT8", "data": [0] * 1024}
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/v2/models/nope/infer", {"inputs": [img]}),
        (
            "POST",
            "/v2/models/classifier/infer",
            {"inputs": [dict(img, shape=[1, 1, 32, 31], data=[0] * 992)]},
        ),
        ("POST", "/v2/models/classifier/infer", {"inputs": [dict(img, datatype="FP32")]}),
        ("POST", "/v2/models/classifier/infer", {"inputs": [dict(img, datatype="FOO")]}),
        ("POST", "/v2/models/classifier/infer", {"inputs": [dict(img, name="pixels")]}),
        (
            "POST",
            "/v2/models/countdown/infer",
            {"inputs": [{"name": "N", "shape": [1], "datatype": "INT32", "data": [3]}]},
        ),
        ("GET", "/v2/models/nope", None),
        ("GET", "/v2/models/nope/config", None),
        ("GET", "/v2/models/nope/ready", None),
        ("GET", "/v2/models/classifier/versions/9", None),
        ("GET", "/v2/models/nope/stats", None),
    ]
    for method, path, body in calls:
        want, got = (
            httpx.request(method, f"{base}{path}", json=body)
            for base in (f"http://{stack.triton.http_url}", stack.url)
        )
        assert got.status_code == want.status_code >= 400, (path, got.text, want.text)
        assert set(got.json()) == {"error"} and isinstance(got.json()["error"], str), got.text
        assert set(want.json()) == {"error"}


# ---------------------------------------------------------------------------------------- streaming


def _generate_inputs(mod: Any, prompt: str = "ROMEO:", seed: int = 7) -> list[Any]:
    values = {
        "PROMPT": np.array([prompt.encode()], dtype=object),
        "MAX_NEW_TOKENS": np.array([12], np.int32),
        "TEMPERATURE": np.array([0.8], np.float32),
        "TOP_K": np.array([10], np.int32),
        "TOP_P": np.array([0.95], np.float32),
        "SEED": np.array([seed], np.int64),
        "STOP": np.array([b""], dtype=object),
    }
    inputs = []
    for name, arr in values.items():
        datatype = (
            "BYTES"
            if arr.dtype == object
            else {"int32": "INT32", "int64": "INT64"}.get(str(arr.dtype), "FP32")
        )
        inp = mod.InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


def _summary(result: Any) -> tuple[Any, ...]:
    """One streamed response as comparable values (its outputs; the final flag)."""
    resp = result.get_response()
    outs = {o.name: result.as_numpy(o.name).tolist() for o in resp.outputs}
    return outs, resp.parameters["triton_final_response"].bool_param


def _joined(responses: list[tuple[dict[str, Any], bool]]) -> tuple[Any, ...]:
    """A generation's responses joined: text, token ids, finish reason, and the final flags. The
    generator chunks adaptively (more tokens per response when the sender falls behind), so where
    chunks break depends on timing; what they carry does not."""
    text = b"".join(o["TEXT"][0] for o, _ in responses if "TEXT" in o)
    ids = [i for o, _ in responses if "TOKEN_IDS" in o for i in o["TOKEN_IDS"]]
    reasons = [o["FINISH_REASON"][0] for o, _ in responses if o.get("FINISH_REASON", [b""])[0]]
    return text, ids, reasons, [final for _, final in responses][-1:], sum(final for _, final in responses)


def _stream(url: str, asks: list[tuple[str, list[Any], str]]) -> list[Any]:
    """Each request's joined responses until its final one (or its error), over one stream."""
    client = gc.InferenceServerClient(url)
    q: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: q.put((result, error)))
    runs: list[Any] = []
    try:
        for model, inputs, rid in asks:
            client.async_stream_infer(model, inputs, request_id=rid, enable_empty_final_response=True)
            got: list[Any] = []
            while True:
                result, error = q.get(timeout=60)
                if error is not None:
                    assert isinstance(error, InferenceServerException)
                    runs.append(("error", rid))
                    break
                got.append(_summary(result))
                if got[-1][1]:
                    runs.append(_joined(got))
                    break
    finally:
        client.stop_stream()
    return runs


def test_grpc_decoupled_stream(stack: Stack) -> None:
    """The text generator over ModelStreamInfer: the same responses, one by one, as from Triton; an
    error travels on the stream and the stream goes on."""
    asks = [
        ("gpt", _generate_inputs(gc), "a"),
        ("nope", _generate_inputs(gc), "b"),
        ("gpt", _generate_inputs(gc, "JULIET:", seed=3), "c"),
    ]
    want, got = (_stream(url, asks) for url in (stack.triton.grpc_url, stack.grpc_url))
    assert got == want
    text, ids, reasons, last, finals = got[0]
    assert len(ids) == 12 and text and reasons and last == [True] and finals == 1
    assert got[1] == ("error", "b")


# ---------------------------------------------------------------------------------------- aio clients


def test_aio_clients(door: Door, digits: np.ndarray) -> None:
    async def run(url: str) -> list[Any]:
        client = door.aio.InferenceServerClient(url)
        try:
            out: list[Any] = [await client.is_server_ready(), await client.is_model_ready("classifier")]
            out.append(await client.get_model_metadata("classifier"))
            inp = door.aio.InferInput("image", list(digits.shape), "UINT8")
            inp.set_data_from_numpy(digits)
            out.append((await client.infer("classifier", [inp])).as_numpy("probs").round(5).tolist())
            try:
                await client.infer("nope", [inp])
            except InferenceServerException as exc:
                assert isinstance(exc.message(), str)
                out.append(exc.status())
            return out
        finally:
            await client.close()

    want, got = (asyncio.run(run(url)) for url in (door.triton, door.gateway))
    assert got == want and want[-1] in ("404", "StatusCode.NOT_FOUND")


def test_grpc_aio_decoupled_stream(stack: Stack) -> None:
    async def run(url: str) -> list[Any]:
        client = gca.InferenceServerClient(url)

        async def requests() -> Any:
            yield {
                "model_name": "gpt",
                "inputs": _generate_inputs(gca),
                "request_id": "x",
                "enable_empty_final_response": True,
            }

        got: list[Any] = []
        try:
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                got.append(_summary(result))
                if got[-1][1]:
                    break
        finally:
            await client.close()
        return _joined(got)

    want, got = (asyncio.run(run(url)) for url in (stack.triton.grpc_url, stack.grpc_url))
    assert got == want and len(got[1]) == 12


# ---------------------------------------------------------------------------------------- refused


def test_repository_control_is_refused(door: Door) -> None:
    """Load/unload stay with the operators (/admin): refused on the doors, readable by tritonclient."""
    _, gateway = door.clients()
    for call in (lambda: gateway.unload_model("classifier"), lambda: gateway.load_model("classifier")):
        kind, status = outcome(call)
        assert (kind, status) == ("error", "403" if door.proto == "http" else "StatusCode.PERMISSION_DENIED")
    assert gateway.is_model_ready("classifier")


def test_http_door_errors_from_the_guard_are_kserve_form(stack: Stack, tmp_path: Any) -> None:
    """401 from the guard (API keys) reaches tritonclient.http as a readable error too."""
    keyed = procs.start_gateway(
        stack.triton.grpc_url,
        tmp_path,
        wait_ready=False,
        env={
            "GATEWAY_GRPC_PORT": str(procs.free_port()),
            "GATEWAY_API_KEYS": "k1",
            "GATEWAY_REQUEST_LOG": "false",
        },
    )
    try:
        client = hc.InferenceServerClient(keyed.url.removeprefix("http://"))
        assert outcome(lambda: client.get_model_metadata("classifier")) == ("error", "401")
        assert client.get_model_metadata("classifier", headers={"X-API-Key": "k1"})["name"] == "classifier"
        r = httpx.get(f"{keyed.url}/v2/models/classifier")
        assert r.status_code == 401 and isinstance(r.json()["error"], str)
        r = httpx.get(f"{keyed.url}/v1/models")  # task routes keep their own shape
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    finally:
        keyed.stop()
