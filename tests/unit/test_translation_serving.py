"""Translation export and the translator's batching engines outside Triton: both graphs pass parity
and a whole ONNX greedy decode equals PyTorch's; the served decode loop, with requests joining at
different steps and sources of different lengths sharing a batch, gives every request exactly the
offline greedy output and attention."""

from __future__ import annotations

import queue
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from export.onnx_export import ort_session
from export.repository import write_model
from export.tasks import get_exporter
from tests.support.text_models import load_generator_module
from training.common import Checkpoint
from training.data import numbers
from training.models import build_model, config_class
from training.translate import ARCHS, arch_facts, encode_sources, greedy

SMALL = {
    "seq2seq_attn": {"embed_dim": 16, "enc_hidden": 16, "hidden_size": 24, "attn_dim": 16},
    "transformer_seq2seq": {"d_model": 32, "n_head": 4, "enc_layers": 1, "dec_layers": 2},
}
TEXTS = [
    "five million seven",
    "seven hundred and five million, thirty thousand, two hundred nineteen",
    "twelve",
    "forty-two thousand six hundred",
    "nine hundred ninety nine",
    "a hundred and one",
]


def checkpoint(arch: str) -> Checkpoint:
    torch.manual_seed(0)
    cfg = replace(
        config_class(arch)(),
        src_vocab=len(numbers.SOURCE),
        tgt_vocab=len(numbers.TARGET),
        max_target_len=numbers.MAX_DIGITS + 1,
        **SMALL[arch],
    )
    model = build_model(arch, cfg).eval()
    if arch == "transformer_seq2seq":  # spread the (tied) output logits: no near-ties at random init
        with torch.no_grad():
            model.tgt_emb.weight.mul_(40.0)
    meta = {
        "source_chars": numbers.SOURCE_CHARS,
        "target_chars": numbers.TARGET_CHARS,
        "arch_facts": arch_facts(arch, cfg),
    }
    return Checkpoint(arch, asdict(cfg), "translation", meta, model)


@pytest.fixture(scope="module", params=ARCHS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    ckpt = checkpoint(request.param)
    tmp = tmp_path_factory.mktemp(request.param)
    (entry,) = get_exporter("translation")(ckpt, tmp / "work", "tr")
    return ckpt, entry, write_model(tmp / "repo", "cpu", entry)


def test_export_checks_and_contract(exported: tuple[Any, Any, Path]) -> None:
    ckpt, entry, vdir = exported
    parity = entry.card["parity"]
    assert parity["greedy"]["ids_equal"] and parity["greedy"]["attention_max_abs_err"] <= 1e-4
    assert {"encoder", "step", "first_step"} <= set(parity)
    dec = entry.card["onnx_contract"]["decoder"]
    for spec in dec["inputs"] + dec["outputs"]:  # only batch, source and cache length are dynamic
        assert set(spec["dynamic"].values()) <= {"batch", "source", "past"}, spec
    params = entry.parameters
    assert params["arch"] == ckpt.arch and int(params["max_source_chars"]) == 128
    assert {"model.py", "encoder.onnx", "decoder.onnx", "generator.py", "textgen.py"} <= {
        p.name for p in vdir.iterdir()
    }


def served_loop(vdir: Path, entry: Any) -> Any:
    """The exported translator without Triton: engines and the decode iteration, threads not started."""
    mod = load_generator_module(vdir)
    m = mod.TritonPythonModel.__new__(mod.TritonPythonModel)
    params = entry.parameters
    facts = __import__("json").loads(params["state"])
    enc, dec = ort_session(vdir / "encoder.onnx"), ort_session(vdir / "decoder.onnx")
    if params["arch"] == "transformer_seq2seq":
        m.engine = mod.TransformerEngine(
            enc, dec, facts["dec_layers"], facts["n_head"], facts["head_dim"], int(params["max_target_len"])
        )
    else:
        m.engine = mod.RnnEngine(enc, dec)
    m.source_chars, m.target_chars = numbers.SOURCE_CHARS, numbers.TARGET_CHARS
    m.max_target_len, m.stats_interval, m.load_chunk = int(params["max_target_len"]), 0.0, 1
    m.stats, m.active, m.out_lock, m.outq = m._zero_stats(), [], threading.Lock(), queue.SimpleQueue()
    return mod, m


def test_continuous_batching_equals_offline_greedy(exported: tuple[Any, Any, Path]) -> None:
    ckpt, entry, vdir = exported
    mod, m = served_loop(vdir, entry)
    rows = [mod.Row(str(i), None, encode_sources([t])[0].numpy(), t) for i, t in enumerate(TEXTS)]
    arrive = {0: rows[:2], 2: rows[2:4], 3: rows[4:5], 6: rows[5:]}  # join at different steps
    for it in range(40):
        m._iteration(arrive.get(it, []))
        if it > max(arrive) and not m.active:
            break
    refs = greedy(ckpt.model, encode_sources(TEXTS))
    for row, ref in zip(rows, refs, strict=True):
        assert row.done and row.out_reason in ("stop", "length")
        assert row.out_ids == ref.ids and row.out_text == ref.text, row.text
        if ref.ids:
            np.testing.assert_allclose(np.stack(row.attention), np.array(ref.attention), atol=1e-4)
    assert m.stats["rows"] > m.stats["iterations"]  # steps of several requests shared calls


def test_normalisation_refuses_unknown_characters(exported: tuple[Any, Any, Path]) -> None:
    _, entry, vdir = exported
    mod, _ = served_loop(vdir, entry)
    assert mod.normalize("  Five\tMILLION  seven ", numbers.SOURCE_CHARS) == "five million seven"
    for bad in ("42", "fünf", "", "   "):
        with pytest.raises(ValueError):
            mod.normalize(bad, numbers.SOURCE_CHARS)
