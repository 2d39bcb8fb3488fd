"""Through the front door: real gateway process -> real Triton, over sockets."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.procs import GatewayHandle, TritonHandle, free_port, start_gateway

pytestmark = pytest.mark.slow


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    from training.data.digits import raw_digit_images, split_indices

    raw, y = raw_digit_images()
    _, _, test = split_indices(y)
    return raw[test], y[test]


def test_held_out_digit_gets_its_label(
    gateway: GatewayHandle, test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    raw, y = test_split
    r = httpx.post(
        f"{gateway.url}/v1/classify", files={"file": ("d.png", png(raw[0]), "image/png")}, params={"top_k": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "classifier" and body["model_version"] == "1"
    assert body["predictions"][0]["label"] == str(y[0]) and len(body["predictions"]) == 3
    scores = [p["score"] for p in body["predictions"]]
    assert scores == sorted(scores, reverse=True)


def test_raw_body_and_jpeg(gateway: GatewayHandle, test_split: tuple[np.ndarray, np.ndarray]) -> None:
    raw, y = test_split
    big = np.asarray(Image.fromarray(raw[1]).resize((64, 64), Image.Resampling.NEAREST))
    r = httpx.post(
        f"{gateway.url}/v1/classify", content=png(big, "JPEG"), headers={"content-type": "image/jpeg"}
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == str(y[1])


def test_served_accuracy_equals_offline(
    gateway: GatewayHandle,
    classifier_ckpt,  # noqa: ANN001
    test_split: tuple[np.ndarray, np.ndarray],
) -> None:
    import json

    raw, y = test_split
    offline = json.loads((classifier_ckpt.parent / "metrics.json").read_text())["test_accuracy"]
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        preds = [
            c.post(
                "/v1/classify", files={"file": ("d.png", png(img), "image/png")}, params={"top_k": 1}
            ).json()["predictions"][0]["label"]
            for img in raw
        ]
    served = float(np.mean([p == str(t) for p, t in zip(preds, y, strict=True)]))
    assert abs(served - offline) <= 0.005, (served, offline)


def test_models_listing_is_discovered(gateway: GatewayHandle) -> None:
    models = {m["name"]: m for m in httpx.get(f"{gateway.url}/v1/models").json()["models"]}
    assert models["classifier"]["task"] == "classification"
    assert models["classifier"]["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [1, 32, 32]}


def test_ready_and_metrics(gateway: GatewayHandle, triton: TritonHandle) -> None:
    assert httpx.get(f"{gateway.url}/readyz").json()["models"]["classifier"] is True
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'gateway_requests_total{model="classifier",route="/v1/classify",status="200"}' in text
    assert "gateway_triton_duration_seconds_bucket" in text
    triton_metrics = httpx.get(triton.metrics_url).text
    assert 'nv_inference_count{model="classifier"' in triton_metrics


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code"),
    [
        (b"plain text", "text/plain", 415, "unsupported_media_type"),
        (b"GIF89a-but-not-really", "image/gif", 422, "corrupt_image"),
        (b"", "image/png", 422, "empty_image"),
    ],
)
def test_bad_inputs_get_json_errors_and_service_stays_up(
    gateway: GatewayHandle, content: bytes, ctype: str, status: int, code: str
) -> None:
    r = httpx.post(f"{gateway.url}/v1/classify", content=content, headers={"content-type": ctype})
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200


def test_multipart_non_image_is_415(gateway: GatewayHandle) -> None:
    r = httpx.post(f"{gateway.url}/v1/classify", files={"file": ("a.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "error" in r.json()


def test_oversized_upload_is_413(gateway: GatewayHandle) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/classify",
        content=b"\x89PNG" + b"0" * (11 * 1024 * 1024),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_unknown_model_is_404(gateway: GatewayHandle, test_split: tuple[np.ndarray, np.ndarray]) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/classify",
        params={"model": "nope"},
        files={"file": ("d.png", png(test_split[0][0]), "image/png")},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_triton_unreachable_is_503_then_gateway_keeps_serving(tmp_path, test_split) -> None:  # noqa: ANN001
    dead = start_gateway(f"127.0.0.1:{free_port()}", tmp_path, wait_ready=False)
    try:
        r = httpx.post(
            f"{dead.url}/v1/classify", files={"file": ("d.png", png(test_split[0][0]), "image/png")}
        )
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["error"]["code"] == "upstream_unavailable"
        assert httpx.get(f"{dead.url}/healthz").status_code == 200
        assert httpx.get(f"{dead.url}/readyz").status_code == 503
    finally:
        dead.stop()


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer(
    gateway: GatewayHandle, test_split: tuple[np.ndarray, np.ndarray]
) -> None:
    """Coalescing (serving/gateway/coalesce.py): 24 different digits at once, each answered as if alone."""
    import asyncio

    raw, _ = test_split
    images = [png(raw[i]) for i in range(24)]

    def scores(body: dict) -> dict[str, float]:
        return {p["label"]: p["score"] for p in body["predictions"]}

    alone = [
        scores(
            httpx.post(
                f"{gateway.url}/v1/classify",
                content=img,
                headers={"content-type": "image/png"},
                params={"top_k": 10},
            ).json()
        )
        for img in images
    ]
    before = httpx.get(f"{gateway.url}/metrics").text

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/classify",
                        content=img,
                        params={"top_k": 10},
                        headers={"content-type": "image/png"},
                    )
                    for img in images
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * len(images)
    for got, want in zip((scores(r.json()) for r in responses), alone, strict=True):
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-5 for k in want)

    def calls_and_rows(text: str) -> tuple[float, float]:
        values = {
            line.split("{")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_triton_batch_rows_") and 'model="classifier"' in line
        }
        return values.get("gateway_triton_batch_rows_count", 0.0), values.get(
            "gateway_triton_batch_rows_sum", 0.0
        )

    (c0, r0), (c1, r1) = calls_and_rows(before), calls_and_rows(httpx.get(f"{gateway.url}/metrics").text)
    assert r1 - r0 == len(images)  # every image went to Triton exactly once
    assert c1 - c0 < len(images)  # in fewer calls than requests
