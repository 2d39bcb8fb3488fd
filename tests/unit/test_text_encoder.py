"""BERT-style encoder (issue 14): MLM corruption, the genre split, the tiny recipe's report, export parity
and the gateway's tokenisation matching the recipe's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import ort_session
from export.tasks import get_exporter
from serving.gateway import errors
from serving.gateway.settings import Settings
from serving.gateway.textenc import EncoderParams, encode
from serving.gateway.triton import ModelInfo
from tests.support.text_models import encoder_checkpoint
from training import classify_text as ct
from training.common import load_checkpoint
from training.data import shakespeare as sh


@pytest.fixture(scope="module")
def ckpt_path() -> Path:
    return encoder_checkpoint()


def test_mask_tokens_bert_80_10_10() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(ct.OFFSET, 60, (64, 65))
    tokens[:, 0] = ct.CLS
    tokens[:, 50:] = ct.PAD
    inp, tgt = ct.mask_tokens(tokens, 60, gen)
    picked = tgt != -100
    assert not picked[:, 0].any() and not picked[:, 50:].any()  # never [CLS] or padding
    rate = picked[:, 1:50].float().mean().item()
    assert 0.12 < rate < 0.18
    assert torch.equal(tgt[picked], tokens[picked])
    masked = (inp[picked] == ct.MASK).float().mean().item()
    kept = (inp[picked] == tokens[picked]).float().mean().item()
    assert 0.74 < masked < 0.86 and 0.06 < kept < 0.16  # kept: the 10% unchanged + random hits
    assert torch.equal(inp[~picked], tokens[~picked])


def test_genre_split_by_play_is_balanced_and_disjoint() -> None:
    assert set(sh.GENRE_OF.values()) == set(sh.GENRES)
    assert not set(sh.GENRE_OF) & set(sh.POEMS)
    test = [sh.GENRE_OF[w] for w in sh.GENRE_TEST_WORKS]
    assert sorted(test) == sorted(sh.GENRES * 2)  # two plays per genre
    data = sh.load_genre_splits(limit_chars=5_000)
    assert set(data.test) == set(sh.GENRE_TEST_WORKS) and not set(data.test) & set(data.train)
    # pre-training text holds no test play: it is the other works concatenated
    works = sh.load_works()
    poems = sum(min(len(works[w]), 5_000) for w in sh.POEMS)
    assert len(data.pretrain) == sum(len(v) for v in data.train.values()) + poems


def test_tiny_recipe_reports_both_runs_and_the_gap(ckpt_path: Path) -> None:
    report = json.loads((ckpt_path.parent / ct.REPORT_NAME).read_text())
    for run in ("finetuned", "scratch"):
        assert 0.0 <= report[run]["accuracy"] <= 1.0 and 0.0 <= report[run]["macro_f1"] <= 1.0
        assert np.sum(report[run]["confusion"]) == report["test_passages"]
    assert report["gap"]["macro_f1"] == pytest.approx(
        report["finetuned"]["macro_f1"] - report["scratch"]["macro_f1"]
    )
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.task == "text_classification" and ckpt.meta["labels"] == list(sh.GENRES)
    assert ckpt.meta["metrics"]["gap"] == report["gap"]


def test_padding_does_not_change_the_output(ckpt_path: Path) -> None:
    model = load_checkpoint(ckpt_path).model
    vocab = sh.load_genre_splits(1000).vocab
    short, _ = ct.encode_texts(vocab, ["To be, or not"], model.cfg.max_len)  # type: ignore[union-attr]
    both, mask = ct.encode_texts(vocab, ["To be, or not", "a longer line of verse here"], 33)
    with torch.no_grad():
        p1, e1 = model.served(short, torch.ones_like(short))  # type: ignore[operator]
        p2, e2 = model.served(both, mask)  # type: ignore[operator]
    torch.testing.assert_close(p1[0], p2[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(e1[0], e2[0], atol=1e-5, rtol=0)
    assert torch.linalg.vector_norm(e2, dim=1).sub(1).abs().max() < 1e-5


def _info(entry) -> ModelInfo:  # type: ignore[no-untyped-def]
    params = dict(entry.parameters, labels=json.dumps(entry.labels))
    return ModelInfo("bert", "1", entry.task, [], [], entry.max_batch_size, params)


def test_export_parity_and_gateway_tokens_match_the_recipe(ckpt_path: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(ckpt_path)
    (entry,) = get_exporter(ckpt.task)(ckpt, tmp_path, "bert")
    assert entry.card["parity"]["max_abs_err/probs"] <= entry.card["parity"]["atol"]
    assert [t.name for t in entry.inputs] == ["tokens", "attention_mask"]
    assert [t.name for t in entry.outputs] == ["probs", "embedding"]
    params = EncoderParams.of(_info(entry))
    texts = [
        "Now is the winter",
        "our discontent\u2014made \u2211 glory",
    ]  # a dash folded, a sum sign -> space
    tokens, mask, chars = encode(params, texts, Settings())
    vocab = sh.load_genre_splits(1000).vocab
    assert tokens.shape == (2, params.max_len) and chars == [len(vocab.encode(t)) for t in texts]
    ref, ref_mask = ct.encode_texts(vocab, texts, params.max_len)
    np.testing.assert_array_equal(tokens[:, : ref.shape[1]], ref.numpy())
    np.testing.assert_array_equal(mask[:, : ref.shape[1]], ref_mask.numpy())
    sess = ort_session(tmp_path / "model.onnx")
    probs, emb = sess.run(["probs", "embedding"], {"tokens": tokens, "attention_mask": mask})
    with torch.no_grad():
        p, e = ckpt.model.served(ref, ref_mask)  # type: ignore[operator]
    np.testing.assert_allclose(probs, p.numpy(), atol=1e-4)
    np.testing.assert_allclose(emb, e.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_prompt"),
        ("a\x00b", "invalid_prompt"),
        ("x" * 40, "prompt_too_long"),
        ("\ud800", "invalid_utf8"),
    ],
)
def test_gateway_refuses_bad_text(ckpt_path: Path, text: str, code: str) -> None:
    ckpt = load_checkpoint(ckpt_path)
    vocab = sh.load_genre_splits(1000).vocab
    params = EncoderParams(vocab, tuple(sh.GENRES), ct.OFFSET, ct.PAD, ckpt.config["max_len"], 64, 32)
    with pytest.raises(errors.APIError) as exc:
        encode(params, [text], Settings())
    assert exc.value.status == 422 and exc.value.code == code
