"""The BERT encoder through the real gateway and Triton: /v1/classify-text, and OpenAI's /v1/embeddings
through the unchanged openai SDK (float and base64, batches); served == offline PyTorch; bad input is a
4xx in the route's error shape, never a 500."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from serving.textgen import CharVocab
from tests.support.procs import GatewayHandle
from training import classify_text as ct
from training.common import load_checkpoint
from training.data.shakespeare import GENRES

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

TEXTS = [
    "Now is the winter of our",
    "To be, or not to be",
    "Once more unto the breach",
    "caf\u00e9 \u2211 ok",
]
ATOL = 1e-4  # served (onnxruntime in Triton) vs PyTorch, probabilities and embedding components


@pytest.fixture(scope="module")
def offline(served_checkpoints: dict[str, Path]) -> tuple[torch.nn.Module, CharVocab]:
    ckpt = load_checkpoint(served_checkpoints["bert"])
    return ckpt.model, CharVocab.from_dict(ckpt.meta["vocab"])


def reference(offline: tuple[torch.nn.Module, CharVocab], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    model, vocab = offline
    tokens, mask = ct.encode_texts(vocab, texts, model.cfg.max_len)  # type: ignore[union-attr]
    with torch.no_grad():
        probs, emb = model.served(tokens, mask)  # type: ignore[operator]
    return probs.numpy(), emb.numpy()


@pytest.fixture()
def client(gateway: GatewayHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_classify_text_equals_offline(gateway: GatewayHandle, offline: tuple) -> None:
    probs, _ = reference(offline, TEXTS[:1])
    r = httpx.post(f"{gateway.url}/v1/classify-text", json={"text": TEXTS[0], "top_k": 3}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "bert" and body["model_version"]
    got = {p["label"]: p["score"] for p in body["predictions"]}
    assert list(got) == [GENRES[i] for i in np.argsort(-probs[0], kind="stable")]
    np.testing.assert_allclose([got[g] for g in GENRES], probs[0], atol=ATOL)
    one = httpx.post(f"{gateway.url}/v1/classify-text", json={"text": TEXTS[1], "model": "bert", "top_k": 1})
    assert len(one.json()["predictions"]) == 1


def test_embeddings_sdk_float_and_base64_equal_offline(client: openai.OpenAI, offline: tuple) -> None:
    _, emb = reference(offline, TEXTS)
    floats = client.embeddings.create(model="bert", input=TEXTS, encoding_format="float")
    b64 = client.embeddings.create(model="bert", input=TEXTS)  # the SDK asks for base64 and decodes it
    assert floats.model == "bert" and [d.index for d in floats.data] == list(range(len(TEXTS)))
    a = np.array([d.embedding for d in floats.data])
    b = np.array([d.embedding for d in b64.data])
    np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))  # same float32 values
    np.testing.assert_allclose(a, emb, atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    used = sum(len(offline[1].encode(t)) + 1 for t in TEXTS)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == used
    single = client.embeddings.create(model="bert", input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, emb[1], atol=ATOL)


def test_embeddings_errors_in_openai_shape(client: openai.OpenAI, gateway: GatewayHandle) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.embeddings.create(model="bert", input=["ok"] * 65, encoding_format="float")
    assert exc.value.status_code == 413
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="ok")
    cases = [
        ({"model": "bert", "input": ""}, "empty_prompt"),
        ({"model": "bert", "input": ["ok", "a\x00b"]}, "invalid_prompt"),
        ({"model": "bert", "input": "x" * 500}, "prompt_too_long"),
        ({"model": "bert", "input": []}, "empty_input"),
        ({"model": "bert", "input": [1, 2, 3]}, "invalid_parameter"),  # token arrays: not these models
        ({"model": "bert", "input": "ok", "encoding_format": "hex"}, "invalid_parameter"),
    ]
    for body, code in cases:
        r = httpx.post(f"{gateway.url}/v1/embeddings", json=body, timeout=30)
        assert r.status_code == 422, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == code and err["type"] == "invalid_request_error" and "message" in err
    bad = httpx.post(
        f"{gateway.url}/v1/embeddings",
        content=b'{"model": "bert", "input": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 422, bad.text
    err = bad.json()["error"]  # OpenAI's shape here too, as the SDK reads it
    assert err["code"] == "invalid_utf8" and err["type"] == "invalid_request_error" and err["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"text": ""}, "empty_prompt"),
        ({"text": "a\x00b"}, "invalid_prompt"),
        ({"text": "x" * 500}, "prompt_too_long"),
        ({"text": "ok", "top_k": 0}, "invalid_parameter"),
        ({"text": "ok", "model": "classifier"}, "wrong_task"),
    ],
)
def test_classify_text_bad_input(gateway: GatewayHandle, body: dict, code: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/classify-text", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
