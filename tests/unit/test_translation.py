"""Translation (spelled-out numbers -> digits): data generator exactness, step APIs against teacher forcing,
padding invariance, the metrics, a tiny overfit run and the recipe end to end (tiny profile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.common import load_checkpoint
from training.data import numbers
from training.data.numbers import BOS, EOS, PAD, SOURCE, TARGET
from training.models import build_model
from training.translate import ARCHS, edit_distance, encode_sources, greedy, main, score, translate

SMALL = {
    "seq2seq_attn": {"embed_dim": 16, "enc_hidden": 16, "hidden_size": 24, "attn_dim": 16},
    "transformer_seq2seq": {"d_model": 32, "n_head": 4, "enc_layers": 2, "dec_layers": 2},
}


def small_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**SMALL[arch], "src_vocab": len(SOURCE), "tgt_vocab": len(TARGET), "max_target_len": 10}
    return build_model(arch, cfg).eval()


# --- data ----------------------------------------------------------------------------------------------


def test_generated_examples_are_exact_in_every_style() -> None:
    """An independent reader of the words gives back the target for every example, both splits."""
    for held_out in (False, True):
        for e in numbers.examples(3000, seed=1, held_out=held_out):
            assert numbers.parse(e.source) == int(e.target), e
            assert numbers.normalize(e.source) == e.source
    rng = np.random.default_rng(0)
    for n in [
        0,
        7,
        19,
        20,
        99,
        100,
        101,
        999,
        1000,
        1001,
        10**6,
        10**6 + 7,
        999_999_999,
        *rng.integers(0, 10**9, 500),
    ]:
        for style in (numbers.Style(), numbers.Style(False, True, True, True)):
            assert numbers.parse(numbers.spell(int(n), style)) == n
    assert numbers.spell(342_507, numbers.Style(True, True, True, False)) == (
        "three hundred and forty-two thousand, five hundred and seven"
    )
    assert numbers.spell(5_000_007) == "five million seven"
    assert numbers.spell(100, numbers.Style(a_hundred=True)) == "a hundred"
    with pytest.raises(ValueError):
        numbers.spell(10**9)


def test_held_out_numbers_never_train_and_lengths_match() -> None:
    train = numbers.examples(4000, seed=0, held_out=False)
    test = numbers.examples(4000, seed=1, held_out=True)
    big = {int(e.target) for e in test if int(e.target) >= numbers.SHARED_BELOW}
    assert big and not big & {int(e.target) for e in train}
    assert all(numbers.is_held_out(n) for n in big)
    # same digit-count distribution: every bucket populated in both, mean length within 10%
    for split in (train, test):
        assert {numbers.bucket_of(len(e.source)) for e in split} == set(numbers.bucket_labels())
    mean = [np.mean([len(e.source) for e in s]) for s in (train, test)]
    assert abs(mean[0] - mean[1]) < 0.1 * mean[0]


def test_normalize_folds_case_and_space_and_refuses_the_rest() -> None:
    assert numbers.normalize("  Forty-Two\tThousand  ") == "forty-two thousand"
    for bad in ("", "   ", "forty two!", "dreißig", "a\x00b"):
        with pytest.raises(ValueError):
            numbers.normalize(bad)


def test_batch_layout() -> None:
    src, tin, tout = numbers.batch([numbers.Example("one", "1"), numbers.Example("twenty", "20")])
    assert src.shape == (2, 6) and src[0, 3:].tolist() == [PAD] * 3
    assert tin.tolist() == [[BOS, *TARGET.encode("1"), PAD], [BOS, *TARGET.encode("20")]]
    assert tout.tolist() == [[*TARGET.encode("1"), EOS, PAD], [*TARGET.encode("20"), EOS]]
    assert SOURCE.decode(src[1].tolist()) == "twenty" and TARGET.decode(tout[1].tolist()) == "20"


# --- models ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_step_api_matches_teacher_forcing(arch: str) -> None:
    """Decoding token by token through encode/step (what is served) gives forward()'s logits."""
    model = small_model(arch)
    src, tin, _ = (torch.from_numpy(a) for a in numbers.batch(numbers.examples(4, 3, False)))
    with torch.no_grad():
        full = model(src, tin)  # (N, T, V)
        mask = src != PAD
        n = src.shape[0]
        if arch == "transformer_seq2seq":
            ck, cv = model.encode(src)
            assert ck.shape == (2, n, 4, src.shape[1], 8)
            pk, pv = model.empty_cache(n)
            for t in range(tin.shape[1]):
                logits, k, v, attn = model.step(tin[:, t], torch.full((n,), t), pk, pv, ck, cv, mask)
                pk, pv = torch.cat([pk, k], 3), torch.cat([pv, v], 3)
                torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-4)
                assert attn.shape == src.shape
                torch.testing.assert_close(attn.sum(1), torch.ones(n))
                assert (attn[~mask] == 0).all()
        else:
            memory, keys, h = model.encode(src)
            assert memory.shape == (n, src.shape[1], 32) and keys.shape == (n, src.shape[1], 16)
            for t in range(tin.shape[1]):
                logits, h, attn = model.step(tin[:, t], h, memory, keys, mask)
                torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-4)
                assert (attn[~mask] == 0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_does_not_change_a_row(arch: str) -> None:
    """A source decoded alone (no padding, as served) equals the same source in a padded batch."""
    model = small_model(arch)
    texts = ["three", "six hundred and eighty-five million four hundred thirteen"]
    alone = greedy(model, encode_sources(texts[:1]))[0]
    batched = greedy(model, encode_sources(texts))[0]
    assert alone.ids == batched.ids
    np.testing.assert_allclose(np.array(alone.attention), np.array(batched.attention), atol=1e-5)
    assert all(len(row) == len(texts[0]) for row in alone.attention)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_overfit(arch: str) -> None:
    """A small model learns a fixed handful of examples exactly (the loss, masks and decoder are wired)."""
    torch.manual_seed(0)
    model = small_model(arch).train()
    items = numbers.examples(8, seed=5, held_out=False)
    src, tin, tout = (torch.from_numpy(a) for a in numbers.batch(items))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model.loss(src, tin, tout)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    outs = [t.text for t in greedy(model, src)]
    assert outs == [e.target for e in items], (loss.item(), outs)


def test_metrics() -> None:
    assert edit_distance("12345", "12345") == 0
    assert (
        edit_distance("12345", "1245") == 1 and edit_distance("", "12") == 2 and edit_distance("9", "") == 1
    )
    s = score(["100", "25"], ["100", "35"])
    assert s["exact_match"] == 0.5 and s["cer"] == pytest.approx(1 / 5)


# --- recipe -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_recipe_tiny_writes_checkpoint_metrics_and_plots(arch: str, tmp_path: Path) -> None:
    out = tmp_path / arch
    metrics = main(
        ["--arch", arch, "--profile", "tiny", "--out", str(out), "--no-progress", "--threads", "1"]
    )
    for name in ("model.pt", "metrics.json", "training_curve.png", "length_buckets.png", "attention_map.png"):
        assert (out / name).stat().st_size > 0, name
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["arch"] == arch and 0.0 <= stored["exact_match"] <= 1.0 and stored["cer"] >= 0.0
    assert set(stored["by_length"]) <= set(numbers.bucket_labels())
    ckpt = load_checkpoint(out / "model.pt")  # weights_only=True
    assert ckpt.task == "translation" and ckpt.meta["source_chars"] == numbers.SOURCE_CHARS
    assert ckpt.meta["arch_facts"]["state"] in ("rnn", "kv_cache")
    assert metrics["exact_match"] == stored["exact_match"]
    tr = translate(ckpt.model, "Forty-Two")
    assert len(tr.attention) == len(tr.text) and all(len(r) == len("forty-two") for r in tr.attention)
