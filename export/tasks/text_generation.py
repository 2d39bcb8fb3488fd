"""Language-model export: the step decoder to ONNX with explicit state, served by a decoupled generator.

One ONNX graph per model, ``decoder.onnx``, used for both the prompt (T > 1) and decoding (T = 1):

* ``lstm_lm``: ``tokens (N, T) int64, h (L, N, H), c (L, N, H) -> logits (N, T, V), h_out, c_out``.
* ``gpt``: ``tokens (N, T) int64, past_lengths (N,) int64, past_k_0..past_k_{L-1},
  past_v_0..past_v_{L-1} (N, heads, P, D) -> logits (N, T, V), new_k/new_v (L, N, heads, T, D)``;
  one cache input per layer (slicing a stacked one copies it); row n's cache is columns
  ``[0, past_lengths[n])`` of a caller-owned buffer, the rest is ignored, and only the new
  positions come back (see ``training/models/gpt.py``). Prefill is the same graph with P = 0:
  measured with the quick model, a 64-character prompt takes one call of ~0.8 ms instead of 64
  single-token calls (~8 ms); a separate prefill graph would only drop the empty-past inputs,
  so one graph it is.

Checks: ``check_parity`` against the PyTorch step (random state, padded rows) at ``PARITY_ATOL``, and
a step-by-step onnxruntime decode of a sequence against the PyTorch full-sequence forward at
``STEPWISE_ATOL``, both recorded in the model card.

The served model (``serving/triton/models/generator.py``, copied as ``model.py``) is a decoupled
Python-backend model that holds the session; ``vocab.json`` and ``textgen.py`` (the shared
tokeniser/sampler, ``serving/textgen.py``) travel beside it in the version folder.
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
from serving.textgen import DEFAULT_CHAT_TEMPLATE, CharVocab, check_chat_template
from training.common import Checkpoint

PARITY_ATOL = 1e-4  # logits and state, float32 graph vs float32 eager (same inputs)
PARITY_RTOL = 1e-4
STEPWISE_ATOL = 2e-4  # logits, ONNX step-by-step decode vs PyTorch full-sequence forward
MAX_NEW_TOKENS_CAP = 1024  # the most a request may ask for; the gateway reads it from the config
MAX_PROMPT_CHARS = 4096
MAX_ACTIVE = 64  # sequences decoded together; more requests wait for a free slot
# Decode state (KV caches / recurrent state) all active rows may hold together; the generator
# decodes fewer than MAX_ACTIVE rows at once when 64 rows of this model would exceed it (issue 18).
MAX_STATE_BYTES = 256 * 1024 * 1024
ONNX_NAME = "decoder.onnx"
VOCAB_NAME = "vocab.json"
SHARED_MODULE = BACKEND_MODELS_DIR.parent.parent / "textgen.py"  # serving/textgen.py

# The served interface: every input is a 1-element tensor except STOP (0..n strings).
SERVED_INPUTS = [
    TensorSpec("PROMPT", "bytes", [1]),
    TensorSpec("MAX_NEW_TOKENS", "int32", [1]),
    TensorSpec("TEMPERATURE", "float32", [1]),
    TensorSpec("TOP_K", "int32", [1]),
    TensorSpec("TOP_P", "float32", [1]),
    TensorSpec("SEED", "int64", [1]),
    TensorSpec("STOP", "bytes", [-1], {0: "stops"}),
]
SERVED_OUTPUTS = [
    TensorSpec("TEXT", "bytes", [1]),
    TensorSpec("TOKEN_IDS", "int64", [-1], {0: "tokens"}),
    TensorSpec("FINISH_REASON", "bytes", [1]),
]


class LstmStep(nn.Module):
    def __init__(self, net: Any) -> None:  # the recipe's model: its `step` is what ONNX records
        super().__init__()
        self.net = net

    def forward(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.step(tokens, h, c)


class GptStep(nn.Module):
    """Flat inputs for ONNX: tokens, past_lengths, past_k_0..past_k_{L-1}, past_v_0..past_v_{L-1}."""

    def __init__(self, net: Any) -> None:  # the recipe's model: its `step` is what ONNX records
        super().__init__()
        self.net = net
        self.layers = net.cfg.n_layer

    def forward(
        self, tokens: torch.Tensor, past_lengths: torch.Tensor, *cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.step(tokens, past_lengths, cache[: self.layers], cache[self.layers :])


def lstm_contract(cfg: dict, vocab_size: int) -> OnnxContract:
    layers, hidden = cfg["num_layers"], cfg["hidden_size"]
    state = {1: "batch"}
    return OnnxContract(
        inputs=[
            TensorSpec("tokens", "int64", [-1, -1], {0: "batch", 1: "new_tokens"}),
            TensorSpec("h", "float32", [layers, -1, hidden], dict(state)),
            TensorSpec("c", "float32", [layers, -1, hidden], dict(state)),
        ],
        outputs=[
            TensorSpec("logits", "float32", [-1, -1, vocab_size], {0: "batch", 1: "new_tokens"}),
            TensorSpec("h_out", "float32", [layers, -1, hidden], dict(state)),
            TensorSpec("c_out", "float32", [layers, -1, hidden], dict(state)),
        ],
        batched=False,  # the served tensors are PROMPT & co.; this graph is internal to the generator
    )


def gpt_contract(cfg: dict, vocab_size: int) -> OnnxContract:
    layers, heads, dim = cfg["n_layer"], cfg["n_head"], cfg["d_model"] // cfg["n_head"]
    cache = [
        TensorSpec(f"past_{kv}_{i}", "float32", [-1, heads, -1, dim], {0: "batch", 2: "past"})
        for kv in "kv"
        for i in range(layers)
    ]
    return OnnxContract(
        inputs=[
            TensorSpec("tokens", "int64", [-1, -1], {0: "batch", 1: "new_tokens"}),
            TensorSpec("past_lengths", "int64", [-1], {0: "batch"}),
            *cache,
        ],
        outputs=[
            TensorSpec("logits", "float32", [-1, -1, vocab_size], {0: "batch", 1: "new_tokens"}),
            TensorSpec("new_k", "float32", [layers, -1, heads, -1, dim], {1: "batch", 3: "new_tokens"}),
            TensorSpec("new_v", "float32", [layers, -1, heads, -1, dim], {1: "batch", 3: "new_tokens"}),
        ],
        batched=False,
    )


def _gpt_feeds(cfg: dict, vocab_size: int, rng: np.random.Generator, past: int) -> dict[str, np.ndarray]:
    layers, heads, dim = cfg["n_layer"], cfg["n_head"], cfg["d_model"] // cfg["n_head"]
    n, t = 3, 2
    lengths = np.array([past, 0, max(past - 2, 0)], dtype=np.int64)
    feeds = {"tokens": rng.integers(0, vocab_size, (n, t)).astype(np.int64), "past_lengths": lengths}
    # columns >= a row's length hold leftovers in a server's buffer: random here, and they must not matter
    for kv in "kv":
        for i in range(layers):
            feeds[f"past_{kv}_{i}"] = rng.standard_normal((n, heads, past, dim)).astype(np.float32)
    return feeds


def stepwise_error(ckpt: Checkpoint, path: Path, length: int = 24, prefill: int = 5) -> float:
    """Max |logit| difference: onnxruntime prefill + single steps vs PyTorch's full forward."""
    cfg, model = ckpt.config, ckpt.model.eval()
    length = min(length, int(cfg["context_length"]))
    tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], (2, length)).astype(np.int64)
    with torch.no_grad():
        ref = model(torch.from_numpy(tokens)).numpy()
    sess = ort_session(path)
    if ckpt.arch == "gpt":  # a capacity buffer of `length` columns, filled as the server does
        layers, heads, dim = cfg["n_layer"], cfg["n_head"], cfg["d_model"] // cfg["n_head"]
        k = np.full((layers, 2, heads, length, dim), 7.0, np.float32)  # leftovers must be masked
        v = np.full_like(k, -7.0)
        outs, done = [], 0
        for t in [prefill] + [1] * (length - prefill):
            feeds = {
                "tokens": tokens[:, done : done + t],
                "past_lengths": np.full(2, done, np.int64),
                **{f"past_k_{i}": k[i] for i in range(layers)},
                **{f"past_v_{i}": v[i] for i in range(layers)},
            }
            lg, new_k, new_v = sess.run(None, feeds)
            k[:, :, :, done : done + t], v[:, :, :, done : done + t] = new_k, new_v
            outs.append(lg)
            done += t
    else:
        h = c = np.zeros((cfg["num_layers"], 2, cfg["hidden_size"]), np.float32)
        outs, done = [], 0
        for t in [prefill] + [1] * (length - prefill):
            lg, h, c = sess.run(None, {"tokens": tokens[:, done : done + t], "h": h, "c": c})
            outs.append(lg)
            done += t
    return float(np.abs(np.concatenate(outs, axis=1) - ref).max())


def export_decoder(ckpt: Checkpoint, workdir: Path) -> tuple[Path, OnnxContract, dict]:
    """Write and verify ``decoder.onnx``; return it, its contract and the parity report."""
    cfg = ckpt.config
    vocab_size = int(cfg["vocab_size"])
    rng = np.random.default_rng(0)
    path = workdir / ONNX_NAME
    if ckpt.arch == "gpt":
        wrapper: nn.Module = GptStep(ckpt.model).eval()
        contract = gpt_contract(cfg, vocab_size)
        ex = _gpt_feeds(cfg, vocab_size, rng, past=3)
        export_onnx(wrapper, tuple(torch.from_numpy(v) for v in ex.values()), contract, path)
        parity = {
            "step": check_parity(
                wrapper, path, _gpt_feeds(cfg, vocab_size, rng, past=6), PARITY_ATOL, PARITY_RTOL
            )
        }
        prefill = _gpt_feeds(cfg, vocab_size, rng, past=0)
        prefill["tokens"] = rng.integers(0, vocab_size, (3, 7)).astype(np.int64)
        parity["prefill"] = check_parity(wrapper, path, prefill, PARITY_ATOL, PARITY_RTOL)
    elif ckpt.arch == "lstm_lm":
        wrapper = LstmStep(ckpt.model).eval()
        contract = lstm_contract(cfg, vocab_size)
        shape = (cfg["num_layers"], 2, cfg["hidden_size"])
        example = (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(shape), torch.zeros(shape))
        export_onnx(wrapper, example, contract, path)
        shape = (cfg["num_layers"], 3, cfg["hidden_size"])
        feeds: dict[str, np.ndarray] = {
            "tokens": rng.integers(0, vocab_size, (3, 4)).astype(np.int64),
            "h": rng.standard_normal(shape).astype(np.float32),
            "c": rng.standard_normal(shape).astype(np.float32),
        }
        parity = {"step": check_parity(wrapper, path, feeds, PARITY_ATOL, PARITY_RTOL)}
    else:
        raise ValueError(f"text_generation export supports lstm_lm and gpt, not {ckpt.arch!r}")
    err = stepwise_error(ckpt, path)
    if err > STEPWISE_ATOL:
        raise AssertionError(
            f"step-wise ONNX decode differs from the full forward by {err:.3g} > {STEPWISE_ATOL}"
        )
    parity["stepwise_vs_full_forward"] = {"max_abs_err": err, "atol": STEPWISE_ATOL}
    return path, contract, parity


def state_bytes_per_sequence(arch: str, facts: dict[str, Any], context_length: int) -> int:
    """float32 bytes one decode row holds in the generator: GPT's K and V buffers of
    ``context_length`` positions per layer (allocated whole, whatever the request's length), or the
    LSTM's h and c per layer. 0 when the facts are unknown."""
    try:
        if arch == "gpt":
            return (
                2 * int(facts["n_layer"]) * int(facts["n_head"]) * context_length * int(facts["head_dim"]) * 4
            )
        return 2 * int(facts["num_layers"]) * int(facts["hidden_size"]) * 4
    except (KeyError, TypeError, ValueError):
        return 0


@register_exporter("text_generation")
def export_text_generator(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    if "vocabulary" not in meta:
        raise ValueError("checkpoint meta has no vocabulary; retrain with training.generate")
    vocab = CharVocab.from_dict(meta["vocabulary"])
    if len(vocab) != int(ckpt.config["vocab_size"]):
        raise ValueError(f"vocabulary has {len(vocab)} characters, the model {ckpt.config['vocab_size']}")
    path, contract, parity = export_decoder(ckpt, workdir)
    vocab_path = vocab.save(workdir / VOCAB_NAME)
    cfg = ckpt.config
    is_gpt = ckpt.arch == "gpt"
    params = {
        "arch": ckpt.arch,
        "context_length": str(cfg["context_length"]),
        "vocab_size": str(len(vocab)),
        "max_new_tokens": str(MAX_NEW_TOKENS_CAP),
        "max_prompt_chars": str(MAX_PROMPT_CHARS),
        "max_active": str(MAX_ACTIVE),
        "state_bytes_per_sequence": str(
            state_bytes_per_sequence(ckpt.arch, meta.get("arch_facts", {}), int(cfg["context_length"]))
        ),
        "max_state_bytes": str(MAX_STATE_BYTES),
        "onnx_file": ONNX_NAME,
        "vocab_file": VOCAB_NAME,
        # gpt: fixed positions, a sliding window re-fed when full; lstm: recurrent state, no limit
        "context_policy": "sliding_window" if is_gpt else "recurrent",
        "state": json.dumps(meta.get("arch_facts", {}), sort_keys=True),
        # messages -> prompt for /v1/chat/completions (serving.textgen.render_chat), stored with the model
        "chat_template": json.dumps(check_chat_template(DEFAULT_CHAT_TEMPLATE), sort_keys=True),
    }
    return [
        RepositoryModel(
            name=name,
            task="text_generation",
            inputs=list(SERVED_INPUTS),
            outputs=list(SERVED_OUTPUTS),
            files={ONNX_NAME: path, VOCAB_NAME: vocab_path, "textgen.py": SHARED_MODULE},
            parameters=params,
            backend_model="generator",
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
                "validation_works": meta.get("validation_works"),
                "sample": meta.get("sample"),
                "parity": parity,
                "config": cfg,
                "onnx_contract": contract.to_dict(),
            },
        )
    ]
