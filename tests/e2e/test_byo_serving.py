"""Users' own models, served: exported with `python -m export --onnx/--torch`, then a real Triton and
gateway serve them on the task routes and KServe with no gateway change; served == the user's graph."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from export.__main__ import main as export_main
from export.byo import IMAGENET_MEAN, IMAGENET_STD
from tests.support.foreign_models import write_foreign_models
from tests.support.procs import GatewayHandle, start_gateway, start_triton

pytestmark = pytest.mark.slow
SERVED_ATOL = 1e-5  # probabilities: the served graph vs onnxruntime on the user's own graph


@dataclass
class Byo:
    folder: Path
    gateway: GatewayHandle


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Byo]:
    folder = tmp_path_factory.mktemp("foreign")
    write_foreign_models(folder)
    repo = tmp_path_factory.mktemp("byo-repo")
    common = ("--repository", str(repo), "--targets", "cpu")
    labels = {n: str(folder / f"{n}.labels") for n in ("mobilenet", "efficientnet_nhwc", "fcn")}
    assert (
        export_main(
            [
                *("--onnx", f"{folder / 'mobilenet.onnx'}:mobilenet", "--task", "classification"),
                *("--labels", labels["mobilenet"], "--input-size", "32", *common),
            ]
        )
        == 0
    )
    assert (
        export_main(
            [
                *("--onnx", f"{folder / 'effnet.onnx'}:effnet", "--task", "classification"),
                *("--labels", labels["efficientnet_nhwc"], "--input-layout", "nhwc", "--input-size", "40"),
                *("--normalize", "imagenet", "--outputs", "probs", *common),
            ]
        )
        == 0
    )
    assert (
        export_main(
            [
                *("--onnx", f"{folder / 'fcn.onnx'}:fcn", "--task", "segmentation"),
                *("--labels", labels["fcn"], "--multiple-of", "4", *common),
            ]
        )
        == 0
    )
    work = tmp_path_factory.mktemp("byo-procs")
    triton = start_triton(repo / "cpu", work)
    gateway = start_gateway(triton.grpc_url, work)
    try:
        yield Byo(folder, gateway)
    finally:
        gateway.stop()
        triton.stop()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def user_graph(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def scores_by_label(body: dict) -> np.ndarray:
    by = {p["label"]: p["score"] for p in body["predictions"]}
    return np.array([by[f"class_{i}"] for i in range(len(by))])


def test_mobilenet_like_on_classify_and_kserve_equals_the_users_graph(byo: Byo) -> None:
    hwc = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    r = httpx.post(
        f"{byo.gateway.url}/v1/classify",
        files={"file": ("x.png", png(hwc), "image/png")},
        params={"model": "mobilenet", "top_k": 5},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "mobilenet"
    nchw = hwc.transpose(2, 0, 1)[None]
    want = softmax(user_graph(byo.folder / "mobilenet.onnx", {"input.1": (nchw / 255.0).astype(np.float32)}))[
        0
    ]
    assert np.abs(scores_by_label(r.json()) - want).max() < SERVED_ATOL

    body = {
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [1, 3, 32, 32], "data": nchw.ravel().tolist()}
        ]
    }
    k = httpx.post(f"{byo.gateway.url}/v2/models/mobilenet/infer", json=body, timeout=30)
    assert k.status_code == 200, k.text
    (out,) = k.json()["outputs"]
    assert out["name"] == "probs" and out["shape"] == [1, 5]
    assert np.abs(np.array(out["data"]) - want).max() < SERVED_ATOL


def test_efficientnet_like_nhwc_imagenet_any_size_input(byo: Byo) -> None:
    """A 40x40 NHWC model with ImageNet normalisation; the upload is 57x33 RGBA: the route resizes."""
    rgba = np.random.default_rng(4).integers(0, 256, (33, 57, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    r = httpx.post(
        f"{byo.gateway.url}/v1/classify",
        files={"file": ("x.png", png(rgba), "image/png")},
        params={"model": "effnet", "top_k": 4},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    resized = np.asarray(Image.fromarray(rgba[..., :3]).resize((40, 40), Image.Resampling.BILINEAR))
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    x = ((resized / 255.0 - mean) / std)[None].astype(np.float32)
    want = user_graph(byo.folder / "effnet.onnx", {"pixels": x})[0]
    assert np.abs(scores_by_label(r.json()) - want).max() < 1e-4  # PIL's resize, then float32 in both


def test_fcn_segmenter_on_segment_route(byo: Byo) -> None:
    hwc = np.random.default_rng(5).integers(0, 256, (30, 22, 3), dtype=np.uint8)  # padded to 4s
    r = httpx.post(
        f"{byo.gateway.url}/v1/segment",
        files={"file": ("x.png", png(hwc), "image/png")},
        params={"model": "fcn"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (22, 30)
    assert [c["label"] for c in body["classes"]] == ["class_0", "class_1", "class_2"]
    assert abs(sum(c["fraction"] for c in body["classes"]) - 1) < 1e-6
