"""Task routes in-process against a fake Triton client (``create_app(triton=...)``): the route logic
behind the inference service, with no Triton process. Covers what the e2e tier cannot provoke with
the real models: a model that answers the wrong shape (502 ``model_mismatch``), ``Accept``
negotiation, and the version that served reaching ``X-Model-Version``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.gateway.main import create_app
from serving.gateway.settings import Settings
from serving.gateway.triton import InferResult, ModelInfo, TensorInfo

Answer = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class FakeTriton:
    """The part of ``TritonClient`` the task routes reach: discovery, readiness, inference."""

    def __init__(self, models: dict[str, tuple[ModelInfo, Answer]]) -> None:
        self.models = models
        self.calls: list[tuple[str, str, str]] = []  # (model, version asked, request id)

    async def discover(self, timeout: float = 5.0) -> dict[str, ModelInfo]:
        return {name: info for name, (info, _) in self.models.items()}

    async def server_ready(self, timeout: float = 2.0) -> bool:
        return True

    async def model_ready(self, name: str, version: str = "", timeout: float = 2.0) -> bool:
        return name in self.models

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        version: str = "",
        timeout: float | None = None,
        request_id: str = "",
    ) -> InferResult:
        info, answer = self.models[model]
        self.calls.append((model, version, request_id))
        return InferResult(model, version or info.version, answer(inputs))

    async def close(self) -> None:
        pass


def classifier(scores: int) -> tuple[ModelInfo, Answer]:
    info = ModelInfo(
        "clf",
        "3",
        "classification",
        [TensorInfo("image", "UINT8", (1, 8, 8))],
        [TensorInfo("probs", "FP32", (3,))],
        max_batch_size=8,
        parameters={"labels": json.dumps(["a", "b", "c"]), "image_size": "8", "channels": "1"},
        versions=("3",),
    )
    probs = np.linspace(0.1, 0.6, scores, dtype=np.float32)
    return info, lambda x: {"probs": np.tile(probs, (x["image"].shape[0], 1))}


def segmenter() -> tuple[ModelInfo, Answer]:
    info = ModelInfo(
        "seg",
        "1",
        "segmentation",
        [TensorInfo("image", "UINT8", (3, -1, -1))],
        [TensorInfo("mask", "INT64", (-1, -1))],
        max_batch_size=0,
        parameters={"classes": json.dumps(["bg", "fg"]), "channels": "3", "multiple_of": "16"},
        versions=("1",),
    )

    def answer(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, _, h, w = x["image"].shape  # padded to multiple_of; the route crops
        mask = np.zeros((n, h, w), dtype=np.int64)
        mask[:, :, 1::2] = 1  # every other column: half of any crop of an even width
        return {"mask": mask}

    return info, answer


def png(size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def fake() -> FakeTriton:
    return FakeTriton({"clf": classifier(3), "seg": segmenter()})


@pytest.fixture()
def client(fake: FakeTriton) -> Iterator[TestClient]:
    settings = Settings(triton_grpc_url="127.0.0.1:1", discovery_timeout_s=0.3, triton_timeout_s=1.0)
    with TestClient(create_app(settings, triton=fake)) as c:
        yield c


IMAGE = {"content-type": "image/png"}


def test_classify_through_the_inference_service(client: TestClient, fake: FakeTriton) -> None:
    r = client.post("/v1/classify?top_k=2", content=png(), headers={**IMAGE, "X-Request-ID": "fake-1"})
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == ["c", "b"]
    assert r.headers["x-model-version"] == "3" == r.json()["model_version"]
    assert fake.calls == [("clf", "", "fake-1")]  # no pin, no split: Triton picks; our request id
    assert client.post("/v1/classify?version=3", content=png(), headers=IMAGE).status_code == 200
    assert fake.calls[-1][1] == "3"


def test_a_model_answering_the_wrong_shape_is_502_model_mismatch(fake: FakeTriton) -> None:
    fake.models["clf"] = classifier(2)  # two scores for three labels
    settings = Settings(triton_grpc_url="127.0.0.1:1", discovery_timeout_s=0.3, triton_timeout_s=1.0)
    with TestClient(create_app(settings, triton=fake)) as c:
        r = c.post("/v1/classify", content=png(), headers=IMAGE)
    assert r.status_code == 502 and r.json()["error"]["code"] == "model_mismatch"


def test_segment_accept_negotiation(client: TestClient) -> None:
    body = client.post("/v1/segment", content=png(), headers=IMAGE).json()
    assert [(c["label"], round(c["fraction"], 2)) for c in body["classes"]] == [("bg", 0.5), ("fg", 0.5)]
    for accept, kind in (
        ("image/png", "image/png"),  # a PNG alone means the mask
        ("image/png, application/json", "application/json"),  # JSON wins when it is accepted too
        ("*/*", "application/json"),
    ):
        r = client.post("/v1/segment", content=png(), headers={**IMAGE, "Accept": accept})
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), accept
    mask = Image.open(
        io.BytesIO(client.post("/v1/segment?output=mask", content=png(), headers=IMAGE).content)
    )
    assert mask.mode == "P" and mask.size == (20, 12)
    r = client.post(
        "/v1/segment?output=overlay", content=png(), headers={**IMAGE, "Accept": "application/json"}
    )
    assert Image.open(io.BytesIO(r.content)).mode == "RGB" and r.headers["x-model-version"] == "1"
