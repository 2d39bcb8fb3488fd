"""Triton decoupled Python-backend model: character-level translation (spelled-out numbers -> digits),
greedy decoding with continuous batching.

Served as ``seq2seq`` and ``transformer`` (written by ``export/tasks/translation.py``; config:
``backend: "python"``, ``max_batch_size: 0``, decoupled, one instance). Version folder: ``model.py``
(this file), ``encoder.onnx``, ``decoder.onnx`` (one decoder step with its state as explicit inputs
and outputs), and ``generator.py`` + ``textgen.py``: this model reuses the generator's machinery
(request queue, decode thread, sender thread, error handling) and replaces only what differs: the
request parsing, the state engines and one response per request.

Interface:

==========  ===========  ======  ====================================================================
input       type         dims    meaning
==========  ===========  ======  ====================================================================
``TEXT``    TYPE_STRING  [1]     UTF-8; lower-cased, white space collapsed, then every character must
                                 be in ``source_chars`` (refused otherwise: ``INVALID_ARG``); 1 ..
                                 ``max_source_chars`` characters after that
==========  ===========  ======  ====================================================================

One response (final flag) per request: ``TEXT`` (TYPE_STRING [1], the output), ``TOKEN_IDS`` (TYPE_INT64
[T], EOS excluded) and ``ATTENTION`` (TYPE_FP32 [T, S]: per output character the cross-attention over
the S characters of the normalised input; for the Transformer the last decoder layer's, averaged over
heads). Invalid input: one ``INVALID_ARG`` error response.

Decoding is greedy and ends at EOS or after ``max_target_len`` steps, exactly as
``training.translate.greedy`` does offline, so the served text equals the offline PyTorch output.

Continuous batching (the generator's loop): ``execute`` parses and queues; the decode thread runs,
per iteration, the encoder once for each newly arrived request (N = 1, no padding), then ONE batched
decoder step for every active row, and retires the rows that emitted EOS or reached the length
limit. Rows join and leave between steps. Per-row state, stacked on the batch axis and rebuilt only
when membership changes: the RNN's GRU state ``h`` and its encoder memory and attention keys; the
Transformer's cross-attention K/V (L, N, H, S, D) and a self-attention cache buffer (L, N, H,
max_target_len, D) whose row n holds columns [0, steps_n) (the rest masked by the graph), written in
place with the step's new K/V. Sources of different lengths share a batch padded to the longest and
masked (``src_mask``). Cancellation is seen when the response is sent (a request lasts at most
``max_target_len`` steps).

Config parameters (strings): ``arch`` (seq2seq_attn | transformer_seq2seq), ``state`` (JSON facts:
layers, heads, sizes), ``source_chars``/``target_chars`` (JSON strings; ids are 3 specials then the
characters), ``max_source_chars``, ``max_target_len``, ``encoder_file``, ``decoder_file``,
``max_active`` (rows decoded together, default 64), ``max_pending``, ``intra_op_threads``,
``allow_spinning``, ``stats_interval_s``, ``device``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # generator.py is copied beside this file
from generator import TritonPythonModel as GeneratorModel  # noqa: E402
from generator import ort_session  # noqa: E402

PAD, BOS, EOS = 0, 1, 2
N_SPECIALS = 3


@dataclass(eq=False)
class Row:
    """One request being translated; the outbox fields are the ones the generator's sender reads."""

    request_id: str
    sender: Any
    src: np.ndarray  # (S,) int64 source ids
    text: str  # normalised source
    ids: list[int] = field(default_factory=list)  # output ids so far, EOS excluded
    attention: list[np.ndarray] = field(default_factory=list)  # one (S,) row per output id
    last: int = BOS  # the token the next step reads
    generated: int = 0  # decoder steps run
    pending: tuple[np.ndarray, ...] | None = None  # encoder output, not yet in the batch
    done: bool = False
    cancelled: bool = False
    out_ids: list[int] = field(default_factory=list)
    out_text: str = ""
    out_reason: str = ""
    out_error: str = ""
    queued: bool = False
    checked_at: float = 0.0
    closed: bool = False


def normalize(text: str, chars: str) -> str:
    """Lower case, white space collapsed and trimmed, every character in ``chars`` (``ValueError`` if not);
    the same rule as ``training.data.numbers.normalize``."""
    text = " ".join(text.lower().split())
    bad = sorted({c for c in text if c not in chars})
    if bad:
        raise ValueError(f"characters outside the vocabulary ({chars!r}): {''.join(bad)!r}")
    if not text:
        raise ValueError("text is empty")
    return text


class RnnEngine:
    """Bahdanau seq2seq: h (N, H), memory (N, S, M), keys (N, S, A), src_mask (N, S)."""

    def __init__(self, encoder: Any, decoder: Any) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.rows: list[Row] = []
        self.h = self.memory = self.keys = self.mask = np.zeros((0,), np.float32)

    def encode(self, row: Row) -> None:
        memory, keys, h0 = self.encoder.run(None, {"src": row.src[None]})
        row.pending = (memory[0], keys[0], h0[0])

    def _sync(self, rows: list[Row]) -> None:
        if self.rows == rows and all(r.pending is None for r in rows):
            return
        where = {id(r): i for i, r in enumerate(self.rows)}
        parts = []
        for r in rows:
            if r.pending is not None:
                parts.append(r.pending)
                r.pending = None
            else:
                i, s = where[id(r)], len(r.src)
                parts.append((self.memory[i, :s], self.keys[i, :s], self.h[i]))
        s_max = max(len(r.src) for r in rows)
        n = len(rows)
        mem_dim, key_dim = parts[0][0].shape[1], parts[0][1].shape[1]
        self.memory = np.zeros((n, s_max, mem_dim), np.float32)
        self.keys = np.zeros((n, s_max, key_dim), np.float32)
        self.mask = np.zeros((n, s_max), np.bool_)
        for j, (m, k, _) in enumerate(parts):
            self.memory[j, : len(m)], self.keys[j, : len(k)], self.mask[j, : len(m)] = m, k, True
        self.h = np.stack([h for _, _, h in parts]).astype(np.float32)
        self.rows = list(rows)

    def step(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        self._sync(rows)
        tokens = np.array([r.last for r in rows], np.int64)
        feeds = {
            "tokens": tokens,
            "h": self.h,
            "memory": self.memory,
            "keys": self.keys,
            "src_mask": self.mask,
        }
        logits, self.h, attn = self.decoder.run(None, feeds)
        return logits, attn

    def reset(self) -> None:
        self.rows = []


class TransformerEngine:
    """Encoder-decoder Transformer: cross K/V (L, N, H, S, D), self-attention cache (L, N, H, T, D)."""

    def __init__(
        self, encoder: Any, decoder: Any, layers: int, heads: int, head_dim: int, steps: int
    ) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.shape = (layers, heads, head_dim)
        self.steps = steps  # cache capacity: a row runs at most max_target_len steps
        self.rows: list[Row] = []
        self.cross_k: np.ndarray
        self.cross_v: np.ndarray
        self.past_k: np.ndarray
        self.past_v: np.ndarray
        self.mask: np.ndarray
        self.reset()

    def encode(self, row: Row) -> None:
        cross_k, cross_v = self.encoder.run(None, {"src": row.src[None]})
        row.pending = (cross_k[:, 0], cross_v[:, 0])  # (L, H, S, D)

    def _sync(self, rows: list[Row]) -> None:
        if self.rows == rows and all(r.pending is None for r in rows):
            return
        where = {id(r): i for i, r in enumerate(self.rows)}
        layers, heads, dim = self.shape
        n, s_max = len(rows), max(len(r.src) for r in rows)
        cross_k = np.zeros((layers, n, heads, s_max, dim), np.float32)
        cross_v = np.zeros_like(cross_k)
        past_k = np.zeros((layers, n, heads, self.steps, dim), np.float32)
        past_v = np.zeros_like(past_k)
        mask = np.zeros((n, s_max), np.bool_)
        for j, r in enumerate(rows):
            s, t = len(r.src), r.generated
            mask[j, :s] = True
            if r.pending is not None:
                cross_k[:, j, :, :s], cross_v[:, j, :, :s] = r.pending
                r.pending = None
            else:
                i = where[id(r)]
                cross_k[:, j, :, :s], cross_v[:, j, :, :s] = (
                    self.cross_k[:, i, :, :s],
                    self.cross_v[:, i, :, :s],
                )
                past_k[:, j, :, :t], past_v[:, j, :, :t] = self.past_k[:, i, :, :t], self.past_v[:, i, :, :t]
        self.cross_k, self.cross_v, self.past_k, self.past_v, self.mask = (
            cross_k,
            cross_v,
            past_k,
            past_v,
            mask,
        )
        self.rows = list(rows)

    def step(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        self._sync(rows)
        tokens = np.array([r.last for r in rows], np.int64)
        lengths = np.array([r.generated for r in rows], np.int64)
        feeds = {
            "tokens": tokens,
            "past_lengths": lengths,
            "past_k": self.past_k,
            "past_v": self.past_v,
            "cross_k": self.cross_k,
            "cross_v": self.cross_v,
            "src_mask": self.mask,
        }
        logits, new_k, new_v, attn = self.decoder.run(None, feeds)
        n = np.arange(len(rows))
        # (L, N, H, D) per new position, written at each row's own column
        self.past_k[:, n, :, lengths] = new_k[:, :, :, 0].transpose(1, 0, 2, 3)
        self.past_v[:, n, :, lengths] = new_v[:, :, :, 0].transpose(1, 0, 2, 3)
        return logits, attn

    def reset(self) -> None:
        layers, heads, dim = self.shape
        self.rows = []
        self.cross_k = self.cross_v = np.zeros((layers, 0, heads, 0, dim), np.float32)
        self.past_k = self.past_v = np.zeros((layers, 0, heads, self.steps, dim), np.float32)
        self.mask = np.zeros((0, 0), np.bool_)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")  # strict: invalid UTF-8 is refused (UnicodeDecodeError -> INVALID_ARG)
    return str(value)


class TritonPythonModel(GeneratorModel):
    active: list[Any]

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("the translator is decoupled: set model_transaction_policy")
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        vdir = os.path.join(args["model_repository"], args["model_version"])
        self.logger = pb_utils.Logger
        self.name = args["model_name"]
        self.source_chars = json.loads(params["source_chars"])
        self.target_chars = json.loads(params["target_chars"])
        self.max_source_chars = int(params["max_source_chars"])
        self.max_target_len = int(params["max_target_len"])
        self.max_active = int(params.get("max_active", "64"))
        self.max_pending = int(params.get("max_pending", str(16 * self.max_active)))
        self.stats_interval = float(params.get("stats_interval_s", "0"))
        self.responses_per_step = 1
        self.cancel_check_s = 0.0  # one response per request: always ask is_cancelled before it
        self.load_chunk = 1
        self.stats, self.stats_since = self._zero_stats(), time.perf_counter()
        encoder = ort_session(os.path.join(vdir, params.get("encoder_file", "encoder.onnx")), params, args)
        decoder = ort_session(os.path.join(vdir, params.get("decoder_file", "decoder.onnx")), params, args)
        facts = json.loads(params.get("state", "{}"))
        if params.get("arch") == "transformer_seq2seq":
            self.engine: RnnEngine | TransformerEngine = TransformerEngine(
                encoder,
                decoder,
                int(facts["dec_layers"]),
                int(facts["n_head"]),
                int(facts["head_dim"]),
                self.max_target_len,
            )
        else:
            self.engine = RnnEngine(encoder, decoder)
        self._start_threads()

    def _parse(self, request: Any, sender: Any) -> Row:
        arr = pb_utils.get_input_tensor_by_name(request, "TEXT")
        arr = None if arr is None else arr.as_numpy().reshape(-1)
        if arr is None or arr.size != 1:
            raise ValueError("TEXT must be one string")
        raw = _text(arr[0])
        if "\x00" in raw:
            raise ValueError("TEXT contains NUL characters")
        text = normalize(raw, self.source_chars)
        if len(text) > self.max_source_chars:
            raise ValueError(f"TEXT has {len(text)} characters; at most {self.max_source_chars}")
        src = np.array([self.source_chars.index(c) + N_SPECIALS for c in text], np.int64)
        return Row(request.request_id(), sender, src, text)

    def _iteration(self, new: list[Row]) -> None:
        st, clock = self.stats, time.perf_counter
        t0 = clock()
        for row in new:  # the encoder: once per request
            self.engine.encode(row)
        t1 = clock()
        stepping = [r for r in self.active + new if not (r.done or r.cancelled)]
        for r in self.active:
            if r.cancelled:
                r.done = True
        if stepping:
            logits, attn = self.engine.step(stepping)
            t2 = clock()
            for row, tok, att in zip(stepping, logits.argmax(-1).tolist(), attn, strict=True):
                row.generated += 1
                if tok == EOS:
                    self._finish(row, "stop")
                    continue
                row.ids.append(tok)
                row.attention.append(att[: len(row.src)])
                row.last = tok
                if row.generated >= self.max_target_len:
                    self._finish(row, "length")
            st["step_s"] += t2 - t1
            st["emit_s"] += clock() - t2
        self.active = [r for r in stepping if not r.done]
        st["iterations"] += 1
        st["rows"] += len(stepping)
        st["prefills"] += len(new)
        st["prefill_s"] += t1 - t0
        if self.stats_interval and clock() - self.stats_since >= self.stats_interval:
            self._log_stats()

    def _finish(self, row: Row, reason: str) -> None:
        row.done = True
        text = "".join(self.target_chars[i - N_SPECIALS] for i in row.ids if i >= N_SPECIALS)
        with self.out_lock:
            row.out_ids = list(row.ids)
        self._post(row, text=text, reason=reason)

    def _response(self, seq: Any, ids: list[int], text: str, reason: str) -> Any:
        s = len(seq.src)
        attention = (
            np.stack(seq.attention).astype(np.float32) if seq.attention else np.zeros((0, s), np.float32)
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
                pb_utils.Tensor("TOKEN_IDS", np.array(ids, dtype=np.int64)),
                pb_utils.Tensor("ATTENTION", attention),
            ]
        )
