"""Translation export (spelled-out numbers -> digits): an encoder graph and a decoder-step graph, served
by a decoupled Python-backend model that decodes greedily with continuous batching.

Two ONNX graphs per model (the layouts are the models' own ``encode``/``step``, see
``training/models/seq2seq_attn.py`` and ``training/models/transformer_seq2seq.py``):

* ``seq2seq_attn``
    - ``encoder.onnx``: ``src (N, S) int64 -> memory (N, S, M), keys (N, S, A), h0 (N, H)``
    - ``decoder.onnx``: ``tokens (N,), h (N, H), memory, keys, src_mask (N, S) bool
      -> logits (N, V), h_out (N, H), attention (N, S)``
* ``transformer_seq2seq``
    - ``encoder.onnx``: ``src (N, S) -> cross_k, cross_v (L, N, H, S, D)``
    - ``decoder.onnx``: ``tokens (N,), past_lengths (N,), past_k, past_v (L, N, H, P, D), cross_k,
      cross_v, src_mask (N, S) -> logits (N, V), new_k, new_v (L, N, H, 1, D), attention (N, S)``

Dynamic axes: the batch N and the source length S everywhere, and the cache length P; layer, head,
width and vocabulary axes are fixed. The cache is an explicit input and output (the caller owns the
buffer and writes the new column), so one graph serves rows at different steps.

Checks, recorded in the model card: ``onnx.checker`` (in ``export_onnx``); encoder and step parity vs
PyTorch at ``PARITY_ATOL`` on random padded batches (leftover cache columns random: they must not
matter); and a whole greedy decode through onnxruntime of a padded batch of held-out texts against
``training.translate.greedy``: token ids equal, attention within ``GREEDY_ATOL``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, TensorSpec, check_parity, export_onnx, ort_session
from export.repository import BACKEND_MODELS_DIR, RepositoryModel
from export.tasks import register_exporter
from training.common import Checkpoint

PARITY_ATOL = 1e-4  # float32 graph vs float32 eager, same inputs
PARITY_RTOL = 1e-4
GREEDY_ATOL = 1e-4  # attention rows of a whole greedy decode
MAX_SOURCE_CHARS = 128  # after normalisation; the Transformer's learned positions cap it too
MAX_ACTIVE = 64
ENCODER_NAME, DECODER_NAME = "encoder.onnx", "decoder.onnx"
SHARED_FILES = {  # the translator reuses the generator's batching machinery (serving/triton/models)
    "generator.py": BACKEND_MODELS_DIR / "generator.py",
    "textgen.py": BACKEND_MODELS_DIR.parent.parent / "textgen.py",
}
PARITY_TEXTS = (
    "seven hundred and five million, thirty thousand, two hundred nineteen",
    "five million seven",
    "forty-two",
    "nine hundred ninety nine thousand nine hundred ninety-nine",
    "zero",
)

SERVED_INPUTS = [TensorSpec("TEXT", "bytes", [1])]
SERVED_OUTPUTS = [
    TensorSpec("TEXT", "bytes", [1]),
    TensorSpec("TOKEN_IDS", "int64", [-1], {0: "tokens"}),
    TensorSpec("ATTENTION", "float32", [-1, -1], {0: "tokens", 1: "source"}),
]


class Encoder(nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, src: torch.Tensor) -> Any:
        return self.net.encode(src)


class Step(nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.net.step(*inputs)


def contracts(arch: str, cfg: dict, facts: dict) -> tuple[OnnxContract, OnnxContract]:
    """(encoder, decoder step) contracts."""
    src = TensorSpec("src", "int64", [-1, -1], {0: "batch", 1: "source"})
    vocab = int(cfg["tgt_vocab"])
    mask = TensorSpec("src_mask", "bool", [-1, -1], {0: "batch", 1: "source"})
    attention = TensorSpec("attention", "float32", [-1, -1], {0: "batch", 1: "source"})
    tokens = TensorSpec("tokens", "int64", [-1], {0: "batch"})
    logits = TensorSpec("logits", "float32", [-1, vocab], {0: "batch"})
    if arch == "transformer_seq2seq":
        layers, heads, dim = int(facts["dec_layers"]), int(facts["n_head"]), int(facts["head_dim"])

        def kv(name: str, axis3: str, size: int = -1) -> TensorSpec:
            dyn = {1: "batch"} if size != -1 else {1: "batch", 3: axis3}
            return TensorSpec(name, "float32", [layers, -1, heads, size, dim], dyn)

        enc = OnnxContract([src], [kv("cross_k", "source"), kv("cross_v", "source")], batched=False)
        step = OnnxContract(
            [
                tokens,
                TensorSpec("past_lengths", "int64", [-1], {0: "batch"}),
                kv("past_k", "past"),
                kv("past_v", "past"),
                kv("cross_k", "source"),
                kv("cross_v", "source"),
                mask,
            ],
            [logits, kv("new_k", "", 1), kv("new_v", "", 1), attention],
            batched=False,
        )
        return enc, step
    hidden, mem, att = int(facts["hidden_size"]), int(facts["memory_dim"]), int(facts["attn_dim"])
    memory = TensorSpec("memory", "float32", [-1, -1, mem], {0: "batch", 1: "source"})
    keys = TensorSpec("keys", "float32", [-1, -1, att], {0: "batch", 1: "source"})
    enc = OnnxContract(
        [src], [memory, keys, TensorSpec("h0", "float32", [-1, hidden], {0: "batch"})], batched=False
    )
    h = TensorSpec("h", "float32", [-1, hidden], {0: "batch"})
    h_out = TensorSpec("h_out", "float32", [-1, hidden], {0: "batch"})
    step = OnnxContract([tokens, h, memory, keys, mask], [logits, h_out, attention], batched=False)
    return enc, step


def _src(rng: np.random.Generator, vocab: int, lengths: list[int]) -> np.ndarray:
    src = np.zeros((len(lengths), max(lengths)), np.int64)
    for i, n in enumerate(lengths):
        src[i, :n] = rng.integers(3, vocab, n)
    return src


def _step_feeds(
    arch: str, cfg: dict, facts: dict, rng: np.random.Generator, lengths: list[int], past: int
) -> dict[str, np.ndarray]:
    """A padded batch of rows at different steps; masked cache columns and padding hold noise."""
    n, s = len(lengths), max(lengths)
    mask = np.zeros((n, s), np.bool_)
    for i, m in enumerate(lengths):
        mask[i, :m] = True
    tokens = rng.integers(3, int(cfg["tgt_vocab"]), n).astype(np.int64)
    f32 = np.float32
    if arch == "transformer_seq2seq":
        layers, heads, dim = int(facts["dec_layers"]), int(facts["n_head"]), int(facts["head_dim"])
        return {
            "tokens": tokens,
            "past_lengths": np.array([min(past, i) for i in range(n)], np.int64),
            "past_k": rng.standard_normal((layers, n, heads, past, dim)).astype(f32),
            "past_v": rng.standard_normal((layers, n, heads, past, dim)).astype(f32),
            "cross_k": rng.standard_normal((layers, n, heads, s, dim)).astype(f32),
            "cross_v": rng.standard_normal((layers, n, heads, s, dim)).astype(f32),
            "src_mask": mask,
        }
    return {
        "tokens": tokens,
        "h": rng.standard_normal((n, int(facts["hidden_size"]))).astype(f32),
        "memory": rng.standard_normal((n, s, int(facts["memory_dim"]))).astype(f32),
        "keys": rng.standard_normal((n, s, int(facts["attn_dim"]))).astype(f32),
        "src_mask": mask,
    }


def onnx_greedy(arch: str, facts: dict, max_len: int, enc: Any, dec: Any, src: np.ndarray) -> list[Any]:
    """Greedy decode of a padded batch through the two graphs: [(ids, attention (T, S_i))] per row."""
    mask = src != 0
    n = len(src)
    tok = np.full(n, 1, np.int64)
    toks, atts = [], []
    if arch == "transformer_seq2seq":
        cross_k, cross_v = enc.run(None, {"src": src})
        layers, heads, dim = int(facts["dec_layers"]), int(facts["n_head"]), int(facts["head_dim"])
        past_k = np.full((layers, n, heads, max_len, dim), 3.0, np.float32)  # leftovers must be masked
        past_v = np.full_like(past_k, -3.0)
        for t in range(max_len):
            feeds = {
                "tokens": tok,
                "past_lengths": np.full(n, t, np.int64),
                "past_k": past_k,
                "past_v": past_v,
                "cross_k": cross_k,
                "cross_v": cross_v,
                "src_mask": mask,
            }
            logits, k, v, att = dec.run(None, feeds)
            past_k[:, :, :, t], past_v[:, :, :, t] = k[:, :, :, 0], v[:, :, :, 0]
            tok = logits.argmax(-1)
            toks.append(tok)
            atts.append(att)
    else:
        memory, keys, h = enc.run(None, {"src": src})
        for _ in range(max_len):
            logits, h, att = dec.run(
                None, {"tokens": tok, "h": h, "memory": memory, "keys": keys, "src_mask": mask}
            )
            tok = logits.argmax(-1)
            toks.append(tok)
            atts.append(att)
    ids, att_all = np.stack(toks, 1), np.stack(atts, 1)  # (N, T), (N, T, S)
    out = []
    for i in range(n):
        row = ids[i].tolist()
        row = row[: row.index(2)] if 2 in row else row
        out.append((row, att_all[i, : len(row), : int(mask[i].sum())]))
    return out


def export_graphs(ckpt: Checkpoint, workdir: Path) -> tuple[Path, Path, dict, dict]:
    """Write and verify both graphs; return their paths, contracts (as dicts) and the parity report."""
    from training.translate import encode_sources, greedy

    cfg, meta = ckpt.config, ckpt.meta
    facts = meta["arch_facts"]
    model = ckpt.model.eval()
    enc_c, step_c = contracts(ckpt.arch, cfg, facts)
    rng = np.random.default_rng(0)
    enc_path, dec_path = workdir / ENCODER_NAME, workdir / DECODER_NAME
    src_vocab = int(cfg["src_vocab"])
    # Traced on one unpadded row (= a request): the RNN encoder is the plain GRU, batch 1 as ONNX GRUs want.
    export_onnx(Encoder(model), (torch.from_numpy(_src(rng, src_vocab, [7])),), enc_c, enc_path)
    ex = _step_feeds(ckpt.arch, cfg, facts, rng, [5, 3], past=2)
    export_onnx(Step(model), tuple(torch.from_numpy(v) for v in ex.values()), step_c, dec_path)
    parity: dict[str, Any] = {
        "encoder": check_parity(
            Encoder(model), enc_path, {"src": _src(rng, src_vocab, [9])}, PARITY_ATOL, PARITY_RTOL
        ),
        "step": check_parity(
            Step(model),
            dec_path,
            _step_feeds(ckpt.arch, cfg, facts, rng, [6, 2, 4], 3),
            PARITY_ATOL,
            PARITY_RTOL,
        ),
        "first_step": check_parity(
            Step(model),
            dec_path,
            _step_feeds(ckpt.arch, cfg, facts, rng, [4, 8], 0),
            PARITY_ATOL,
            PARITY_RTOL,
        ),
    }
    # A whole greedy decode, rows padded together (as the server batches them) vs PyTorch one by one.
    max_len = int(cfg["max_target_len"])
    enc_s, dec_s = ort_session(enc_path), ort_session(dec_path)
    rows = []
    for text in PARITY_TEXTS:  # per request: the encoder on one unpadded row
        rows.append(onnx_greedy(ckpt.arch, facts, max_len, enc_s, dec_s, encode_sources([text]).numpy())[0])
    worst = 0.0
    for text, (ids, att) in zip(PARITY_TEXTS, rows, strict=True):
        ref = greedy(model, encode_sources([text]))[0]
        if ids != ref.ids:
            raise AssertionError(f"ONNX greedy decode of {text!r} gave {ids}, PyTorch {ref.ids}")
        if ids:
            worst = max(worst, float(np.abs(att - np.array(ref.attention)).max()))
    if worst > GREEDY_ATOL:
        raise AssertionError(f"ONNX greedy attention differs from PyTorch by {worst:.3g} > {GREEDY_ATOL}")
    parity["greedy"] = {"texts": len(PARITY_TEXTS), "ids_equal": True, "attention_max_abs_err": worst}
    return enc_path, dec_path, {"encoder": enc_c.to_dict(), "decoder": step_c.to_dict()}, parity


@register_exporter("translation")
def export_translator(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta, cfg = ckpt.meta, ckpt.config
    for key in ("source_chars", "target_chars", "arch_facts"):
        if key not in meta:
            raise ValueError(f"checkpoint meta has no {key}; retrain with training.translate")
    if len(meta["source_chars"]) + 3 != int(cfg["src_vocab"]):
        raise ValueError(f"{len(meta['source_chars'])} source characters for src_vocab={cfg['src_vocab']}")
    enc_path, dec_path, onnx_contracts, parity = export_graphs(ckpt, workdir)
    max_source = min(MAX_SOURCE_CHARS, int(cfg.get("max_source_len", MAX_SOURCE_CHARS)))
    params = {
        "arch": ckpt.arch,
        "source_chars": json.dumps(meta["source_chars"]),
        "target_chars": json.dumps(meta["target_chars"]),
        "max_source_chars": str(max_source),
        "max_target_len": str(cfg["max_target_len"]),
        "state": json.dumps(meta["arch_facts"], sort_keys=True),
        "encoder_file": ENCODER_NAME,
        "decoder_file": DECODER_NAME,
        "max_active": str(MAX_ACTIVE),
        # the route's documented rule: lower case, white space collapsed, other characters refused
        "normalize": "lower,collapse_space,refuse_unknown",
    }
    return [
        RepositoryModel(
            name=name,
            task="translation",
            inputs=list(SERVED_INPUTS),
            outputs=list(SERVED_OUTPUTS),
            files={ENCODER_NAME: enc_path, DECODER_NAME: dec_path, **SHARED_FILES},
            parameters=params,
            backend_model="translator",
            gpu_native=False,
            max_batch_size=0,
            dynamic_batching=False,
            decoupled=True,
            cpu_instances=1,
            cpu_threads=1,
            gpu_instances=1,
            card={
                "arch": ckpt.arch,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "parity": parity,
                "config": cfg,
                "onnx_contract": onnx_contracts,
            },
        )
    ]
