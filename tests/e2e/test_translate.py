"""POST /v1/translate through the real gateway and Triton: served greedy output equals the offline
PyTorch decoder (text and attention) for both architectures, also under concurrent requests (the steps
of different requests share batches inside Triton), and bad input is a 4xx, never a 500."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.procs import GatewayHandle
from training.common import load_checkpoint
from training.data import numbers
from training.translate import translate

pytestmark = pytest.mark.slow

TEXTS = [
    "seven hundred and five million, thirty thousand, two hundred nineteen",
    "five million seven",
    "  Forty-Two\tthousand   six hundred ",  # case and white space are normalised
    "zero",
    "nine hundred ninety-nine thousand, nine hundred and ninety-nine",
]
MODELS = ("seq2seq", "transformer")


@pytest.fixture(scope="module")
def offline(served_checkpoints: dict[str, Path]) -> dict[str, object]:
    return {name: load_checkpoint(served_checkpoints[name]).model for name in MODELS}


def post(gateway: GatewayHandle, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/translate", json=body, timeout=60, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MODELS)
def test_served_greedy_equals_offline_pytorch(
    gateway: GatewayHandle, offline: dict[str, object], name: str
) -> None:
    for text in TEXTS:
        r = post(gateway, {"text": text, "model": name, "return_attention": True})
        assert r.status_code == 200, r.text
        body = r.json()
        ref = translate(offline[name], text)  # type: ignore[arg-type]
        assert body["model"] == name and body["model_version"]
        assert body["text"] == ref.text, text
        assert body["source"] == numbers.normalize(text)
        got = np.array(body["attention"]).reshape(len(ref.ids), len(body["source"]))
        np.testing.assert_allclose(got, np.array(ref.attention).reshape(got.shape), atol=1e-4)
    plain = post(gateway, {"text": TEXTS[1], "model": name}).json()
    assert set(plain) == {"model", "model_version", "text"}


def test_concurrent_requests_match_offline(gateway: GatewayHandle, offline: dict[str, object]) -> None:
    jobs = [(MODELS[i % 2], TEXTS[i % len(TEXTS)]) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: post(gateway, {"text": j[1], "model": j[0]}), jobs))
    for (name, text), r in zip(jobs, results, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["text"] == translate(offline[name], text).text  # type: ignore[arg-type]


def test_default_model_is_the_transformer(gateway: GatewayHandle) -> None:
    r = post(gateway, {"text": "twelve"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "transformer"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 422, "empty_prompt"),
        ({"text": " \t\n "}, 422, "empty_prompt"),
        ({"text": "five\x00 thousand"}, 422, "invalid_prompt"),
        ({"text": "one " * 40}, 422, "prompt_too_long"),
        ({"text": "x" * 5000}, 422, "prompt_too_long"),
        ({"text": "42 thousand"}, 422, "unsupported_characters"),
        ({"text": "fünf"}, 422, "unsupported_characters"),
        ({"text": "seven!"}, 422, "unsupported_characters"),
        ({"text": 5}, 422, None),
        ({"text": "five", "return_attention": "yes"}, 422, None),
        ({"text": "five", "temperature": 1}, 422, None),
        ({}, 422, None),
        ({"text": "five", "model": "no-such-model"}, 404, "model_not_found"),
        ({"text": "five", "model": "gpt"}, 422, "wrong_task"),
    ],
)
def test_bad_input_is_refused(gateway: GatewayHandle, body: dict, status: int, code: str | None) -> None:
    r = post(gateway, body)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "raw", [b'{"text": "five \xff thousand"}', b'{"text": "\\ud800 five"}', b'{"text": "five"'], ids=str
)
def test_undecodable_bodies_are_422(gateway: GatewayHandle, raw: bytes) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/translate", content=raw, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 422, r.text
    assert post(gateway, {"text": "five"}).status_code == 200  # still up
