"""Text generation: tokeniser, sampling, step decoders, recipe, ONNX export and the batching engines."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import pytest
import torch

from export.repository import build_config, write_model
from export.tasks import get_exporter
from export.tasks.text_generation import PARITY_ATOL, STEPWISE_ATOL, export_decoder
from serving.textgen import CharVocab, SamplingParams, StopMatcher, prompt_ids, sample_next, window_keep
from tests.support.text_models import ARCHS, load_generator_module, text_checkpoint
from training.common import Checkpoint, load_checkpoint
from training.generate import TorchDecoder, generate
from training.models import build_model

VOCAB = CharVocab(tuple("\n !\"',-.:;?" + string.ascii_letters))


@pytest.fixture(scope="session", params=ARCHS)
def text_ckpt(request: pytest.FixtureRequest) -> Path:
    return text_checkpoint(request.param)


def small_model(arch: str, **over: object) -> torch.nn.Module:
    cfg = {
        "lstm_lm": {"embed_dim": 16, "hidden_size": 24, "num_layers": 2},
        "gpt": {"d_model": 32, "n_layer": 2, "n_head": 4, "context_length": 24},
    }[arch]
    torch.manual_seed(0)
    return build_model(arch, {**cfg, "vocab_size": len(VOCAB), "dropout": 0.0, **over}).eval()


# --- tokeniser ----------------------------------------------------------------------------------


def test_tokeniser_round_trip_and_folding() -> None:
    text = "Ham.\nTo be, or not to be: that is the question!\n"
    ids = VOCAB.encode(text)
    assert ids.dtype == np.int64 and VOCAB.decode(ids) == text
    assert VOCAB.decode(VOCAB.encode("\u201cCaf\u00e9\u201d \u2014 it\u2019s")) == '"Cafe" -- it\'s'
    assert VOCAB.decode(VOCAB.encode("a\u4e2db\tc\r\n")) == "a b c\n"  # unknown -> fallback, tab, CRLF
    assert VOCAB.encode("").size == 0
    assert prompt_ids(VOCAB, "", None).tolist() == VOCAB.encode("\n").tolist()
    assert len(prompt_ids(VOCAB, "abc" * 40, 32)) == window_keep(32)


def test_vocabulary_json_round_trip(tmp_path: Path) -> None:
    path = VOCAB.save(tmp_path / "vocab.json")
    assert CharVocab.load(path) == VOCAB
    with pytest.raises(ValueError):
        CharVocab(("a", "a", " "))
    with pytest.raises(ValueError):
        CharVocab(("a", "b"), fallback=" ")


def test_corpus_vocabulary_covers_the_texts() -> None:
    from training.data.shakespeare import VALIDATION_WORKS, load_splits

    data = load_splits(limit_chars=50_000)
    assert 50 <= len(data.vocab) <= 80 and "\n" in data.vocab.chars
    assert not set(VALIDATION_WORKS) & set(data.train_works)  # split by play
    assert 10 < data.unigram_perplexity() < 40


# --- sampling -----------------------------------------------------------------------------------


def test_sampling_is_deterministic_per_seed_and_batch_independent() -> None:
    logits = np.random.default_rng(0).standard_normal((4, 30)).astype(np.float32)
    params = [
        SamplingParams(1.0, 0, 1.0, 7),
        SamplingParams(0.7, 5, 1.0, 8),
        SamplingParams(1.2, 0, 0.8, 9),
        SamplingParams(0.0, 0, 1.0, 10),
    ]

    def run(rows: list[int], steps: int = 50) -> np.ndarray:
        rngs = [params[i].rng() for i in rows]
        return np.stack([sample_next(logits[rows], [params[i] for i in rows], rngs) for _ in range(steps)])

    together = run([0, 1, 2, 3])
    assert (together == run([0, 1, 2, 3])).all()
    for j in range(4):  # the same ids whether a row is sampled alone or in a batch
        assert (together[:, j] == run([j])[:, 0]).all()
    assert (together[:, 3] == logits[3].argmax()).all()  # temperature 0 is greedy
    top5 = set(np.argsort(-logits[1])[:5].tolist())
    assert set(together[:, 1].tolist()) <= top5
    other = [SamplingParams(1.0, 0, 1.0, 70)]
    rng_a, rng_b = params[0].rng(), other[0].rng()
    a = [sample_next(logits[:1], params[:1], [rng_a])[0] for _ in range(50)]
    b = [sample_next(logits[:1], other, [rng_b])[0] for _ in range(50)]
    assert a != b  # another seed, another sequence


def test_sampling_matches_the_softmax_distribution() -> None:
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    p = SamplingParams(1.0, 0, 1.0, 3)
    rng = p.rng()
    draws = np.array([sample_next(logits, [p], [rng])[0] for _ in range(4000)])
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    nucleus = SamplingParams(1.0, 0, 0.5, 3)  # keeps 0.4 and 0.3 (mass before 0.3 is 0.4 < 0.5)
    rng = nucleus.rng()
    assert set(sample_next(np.repeat(logits, 200, 0), [nucleus] * 200, [rng] * 200).tolist()) == {2, 3}


def test_greedy_does_not_advance_the_rng() -> None:
    p = SamplingParams(0.0, 0, 1.0, 5)
    rng = p.rng()
    sample_next(np.zeros((1, 3)), [p], [rng])
    assert rng.random() == SamplingParams(seed=5).rng().random()


def test_sampling_params_validation() -> None:
    for bad in (
        SamplingParams(-1.0),
        SamplingParams(top_k=-1),
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=1.5),
        SamplingParams(float("nan")),
    ):
        with pytest.raises(ValueError):
            bad.validate()


def test_stop_matcher_holds_back_partial_matches() -> None:
    m = StopMatcher(["\n\n", "END"])
    out = [m.push(c) for c in "abc\nd E"]
    assert "".join(out) == "abc\nd " and not m.stopped  # "E" may start "END": held back
    assert m.push("N") == "" and m.push("D") == "" and m.stopped
    assert m.text == "abc\nd "
    m2 = StopMatcher(["xyz"])
    assert "".join(m2.push(c) for c in "axy") == "a"
    assert m2.flush() == "xy"


# --- architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_step_decoding_reproduces_the_full_forward(arch: str) -> None:
    model = small_model(arch)
    tokens = torch.randint(0, len(VOCAB), (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        chunks = [7, 1, 1, 5, *([1] * 6)]
        if arch == "gpt":
            k, v = model.empty_cache(3)
            state: tuple[torch.Tensor, ...] = (k, v)
        else:
            state = model.init_state(3)
        outs, done = [], 0
        for t in chunks:
            x = tokens[:, done : done + t]
            if arch == "gpt":
                lg, k, v = model.step(x, torch.full((3,), done), *state)
                state = (torch.cat([state[0], k], 3), torch.cat([state[1], v], 3))
            else:
                lg, h, c = model.step(x, *state)
                state = (h, c)
            outs.append(lg)
            done += t
    assert done == 20
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


def test_gpt_rows_of_different_lengths_share_one_cache_buffer() -> None:
    """Row b uses 3 of 11 buffer columns; leftovers beyond a row's length are ignored."""
    model = small_model("gpt")
    a, b = torch.randint(0, len(VOCAB), (1, 12)), torch.randint(0, len(VOCAB), (1, 4))
    with torch.no_grad():
        empty = model.empty_cache(1)
        _, ka, va = model.step(a[:, :11], torch.tensor([0]), *empty)
        _, kb, vb = model.step(b[:, :3], torch.tensor([0]), *empty)
        k = torch.full((2, 2, 4, 11, 8), 5.0)  # (L, N, H, P, D) capacity buffer full of leftovers
        v = torch.full_like(k, -5.0)
        k[:, :1], v[:, :1] = ka, va
        k[:, 1:, :, :3], v[:, 1:, :, :3] = kb, vb
        lg, new_k, _ = model.step(torch.cat([a[:, 11:], b[:, 3:]]), torch.tensor([11, 3]), k, v)
        assert new_k.shape == (2, 2, 4, 1, 8)  # only the new position comes back
        torch.testing.assert_close(lg[0, 0], model(a)[0, 11], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lg[1, 0], model(b)[0, 3], atol=1e-5, rtol=1e-5)


def test_config_validation() -> None:
    from training.models.gpt import GPTConfig
    from training.models.lstm_lm import LSTMLMConfig

    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError):
        GPTConfig(vocab_size=1)
    with pytest.raises(ValueError):
        LSTMLMConfig(hidden_size=0)
    with pytest.raises(ValueError):
        LSTMLMConfig(dropout=1.0)
    gpt = small_model("gpt", tie_weights=True)
    assert gpt.head.weight is gpt.tok_emb.weight
    assert small_model("gpt", tie_weights=False).head.weight is not small_model("gpt").tok_emb.weight


def test_offline_generate_is_reproducible_and_windowed() -> None:
    model = small_model("gpt")  # context 24: 60 tokens force two window re-feeds
    p = SamplingParams(0.9, 10, 0.95, 42)
    g1 = generate(model, VOCAB, "Ham.\n", 60, p)
    g2 = generate(model, VOCAB, "Ham.\n", 60, p)
    assert g1 == g2 and len(g1.token_ids) == 60 and g1.finish_reason == "length"
    assert g1.text == VOCAB.decode(g1.token_ids)
    stop = g1.text[30:32]
    g3 = generate(model, VOCAB, "Ham.\n", 60, p, stop=(stop,))
    assert g3.finish_reason == "stop" and g3.text == g1.text[: g1.text.find(stop)]


# --- recipe and export --------------------------------------------------------------------------


def test_recipe_tiny_writes_checkpoint_metrics_and_sample(text_ckpt: Path) -> None:
    payload = torch.load(text_ckpt, weights_only=True)
    assert payload["task"] == "text_generation" and payload["arch"] in ARCHS
    meta = payload["meta"]
    assert set(meta) >= {"vocabulary", "context_length", "arch_facts", "metrics"}
    assert len(meta["vocabulary"]["chars"]) == payload["config"]["vocab_size"]
    metrics = json.loads((text_ckpt.parent / "metrics.json").read_text())
    assert math.isfinite(metrics["val_perplexity"]) and metrics["val_perplexity"] < metrics["vocab_size"]
    assert metrics["unigram_perplexity"] > 10 and isinstance(metrics["sample"]["text"], str)
    assert (text_ckpt.parent / "training_curve.png").stat().st_size > 1000


def test_recipe_rejects_non_text_architectures() -> None:
    from training.generate import main

    with pytest.raises(SystemExit):
        main(["--arch", "resnet", "--profile", "tiny"])


def test_export_parity_and_repository_entry(text_ckpt: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(text_ckpt)
    (entry,) = get_exporter("text_generation")(ckpt, tmp_path, "lm")
    parity = entry.card["parity"]
    assert parity["stepwise_vs_full_forward"]["max_abs_err"] < STEPWISE_ATOL
    assert parity["step"]["max_abs_err/logits"] < PARITY_ATOL
    assert set(entry.files) == {"decoder.onnx", "vocab.json", "textgen.py"}
    cfg = build_config(entry, "cpu")
    assert cfg.backend == "python" and cfg.max_batch_size == 0 and cfg.model_transaction_policy.decoupled
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["task"] == "text_generation" and params["arch"] == ckpt.arch
    assert int(params["vocab_size"]) == ckpt.config["vocab_size"] and int(params["max_new_tokens"]) >= 256
    assert [i.name for i in cfg.input][:2] == ["PROMPT", "MAX_NEW_TOKENS"]
    assert [o.name for o in cfg.output] == ["TEXT", "TOKEN_IDS", "FINISH_REASON"]
    assert build_config(entry, "gpu").backend == "python"  # the generator is Python on both targets


def test_exporter_rejects_a_checkpoint_without_vocabulary(tmp_path: Path) -> None:
    model = small_model("lstm_lm")
    ckpt = Checkpoint("lstm_lm", {"vocab_size": len(VOCAB)}, "text_generation", {}, model)
    with pytest.raises(ValueError, match="vocabulary"):
        get_exporter("text_generation")(ckpt, tmp_path, "lm")


@pytest.mark.parametrize("arch", ARCHS)
def test_random_model_exports_with_prefill_through_the_step_graph(arch: str, tmp_path: Path) -> None:
    model = small_model(arch)
    cfg = {k: getattr(model.cfg, k) for k in model.cfg.__dataclass_fields__}
    _, _, parity = export_decoder(Checkpoint(arch, cfg, "text_generation", {}, model), tmp_path)
    assert parity["stepwise_vs_full_forward"]["max_abs_err"] < STEPWISE_ATOL
    if arch == "gpt":
        assert parity["prefill"]["max_abs_err/logits"] < PARITY_ATOL


# --- the Triton model's batching engines, driven directly with onnxruntime ----------------------


def test_engine_batches_rows_of_different_lengths_like_single_sequences(
    text_ckpt: Path, tmp_path: Path
) -> None:
    """Sequences joining and leaving one batch get the logits each would get alone (PyTorch)."""
    import onnxruntime as ort

    ckpt = load_checkpoint(text_ckpt)
    (entry,) = get_exporter("text_generation")(ckpt, tmp_path / "work", "lm")
    vdir = write_model(tmp_path / "repo", "cpu", entry)
    gen = load_generator_module(vdir)
    sess = ort.InferenceSession(str(vdir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    facts = ckpt.meta["arch_facts"]
    if ckpt.arch == "gpt":
        engine = gen.GptEngine(
            sess, facts["n_layer"], facts["n_head"], facts["head_dim"], ckpt.config["context_length"]
        )
    else:
        engine = gen.LstmEngine(sess, facts["num_layers"], facts["hidden_size"])
    vocab = CharVocab.from_dict(ckpt.meta["vocabulary"])
    prompts = ["KING.\n", "O", "What say you?", "\n"]
    rng = np.random.default_rng(0)
    seqs, refs = [], []
    for i, prompt in enumerate(prompts):
        ids = np.array(vocab.encode(prompt), np.int64)
        s = gen.Sequence(str(i), None, ids.tolist(), SamplingParams(0.0), None, 100, StopMatcher(), 1)
        ref = TorchDecoder(ckpt.model)
        np.testing.assert_allclose(engine.prefill(s, ids), ref.feed(ids, reset=True), atol=1e-4)
        seqs.append(s)
        refs.append(ref)
    active = [seqs[0], seqs[1]]  # two rows first; the others join later, row 1 leaves early
    for step in range(12):
        if step == 3:
            active += [seqs[2], seqs[3]]
        if step == 7:
            active.remove(seqs[1])
        for s in active:
            s.history.append(int(rng.integers(0, len(vocab))))
        logits = engine.step(active)
        for s, row in zip(active, logits, strict=True):
            ref = refs[seqs.index(s)]
            np.testing.assert_allclose(row, ref.feed(np.array([s.history[-1]]), reset=False), atol=1e-4)
