"""Triton decoupled Python-backend model: streaming character-level text generation, continuous batching.

Served as ``lstm`` and ``gpt`` (written by ``export/tasks/text_generation.py``; config:
``backend: "python"``, ``max_batch_size: 0``, ``model_transaction_policy { decoupled: true }``, one
instance). Version folder: ``model.py`` (this file), ``decoder.onnx`` (the step graph),
``vocab.json`` and ``textgen.py`` (``serving/textgen.py``: tokeniser, sampler, stop strings,
context window - the same code the offline PyTorch generator uses).

Interface (every request over gRPC streaming, or any decoupled-capable client):

========================  ===========  =====  ================================================
input                     type         dims   meaning
========================  ===========  =====  ================================================
``PROMPT``                TYPE_STRING  [1]    UTF-8 text; typographic quotes/accents folded,
                                              unknown characters -> space; empty -> "\\n";
                                              at most ``max_prompt_chars`` characters
``MAX_NEW_TOKENS``        TYPE_INT32   [1]    1 .. ``max_new_tokens`` (config parameter)
``TEMPERATURE``           TYPE_FP32    [1]    0 = greedy (deterministic), > 0 samples
``TOP_K``                 TYPE_INT32   [1]    0 = off, else keep the k most likely tokens
``TOP_P``                 TYPE_FP32    [1]    (0, 1]; 1 = off (nucleus sampling)
``SEED``                  TYPE_INT64   [1]    >= 0: reproducible per-request RNG; < 0: random
``STOP``                  TYPE_STRING  [-1]   0..8 stop strings (<= 64 chars each; "" ignored);
                                              generation ends before the first match, which is
                                              not returned
========================  ===========  =====  ================================================

Optional request parameter (``parameters`` of the infer request): ``chunk_tokens`` (int, default
1, 1..64): the least tokens per streamed response. One character = one token.

Responses: a stream of chunks, each with ``TEXT`` (TYPE_STRING [1], the text released since the previous
response; text that may start a stop string is held back, so it can be empty), ``TOKEN_IDS`` (TYPE_INT64
[n], the ids generated since the previous response) and ``FINISH_REASON`` (TYPE_STRING [1]): ``""`` on
all but the last response, then ``"length"`` (``MAX_NEW_TOKENS`` reached) or ``"stop"`` (a stop string).
The last response carries ``TRITONSERVER_RESPONSE_COMPLETE_FINAL``; concatenating ``TEXT`` gives the
whole completion. Invalid inputs get one error response (``INVALID_ARG``) with the final flag; a full
queue gets ``UNAVAILABLE``. A chunk holds ``chunk_tokens`` tokens, or more when the server is busy (see
below), the last one possibly fewer. Cancellation (the client cancels its gRPC call/stream):
``is_cancelled()`` is checked before every response (with 4+ active streams at most every
``cancel_check_ms`` per stream); the request is then closed with the final flag and no output, and its
row leaves the batch at the next decode step.

Determinism: with ``TEMPERATURE`` 0, or a fixed ``SEED``, the text equals what
``training.generate.generate`` produces offline with PyTorch for the same inputs (same sampling
code, one uniform draw per token from the request's own RNG; logits agree to ~1e-5).

Config parameters it reads (strings): ``arch``, ``context_length``, ``state`` (JSON layer/size facts),
``onnx_file``, ``vocab_file``, ``max_new_tokens`` (cap), ``max_prompt_chars``, ``max_active``
(sequences decoded together, default 64; more wait in a queue), ``max_state_bytes`` with
``state_bytes_per_sequence`` (the decode state all rows may hold; max_active is lowered to fit,
issue 18: a GPT row's KV cache is its whole context window), ``max_pending`` (queue bound,
default 16 x max_active; beyond it UNAVAILABLE "queue is full", which the gateway answers 429),
``responses_per_step`` (1: under load a response carries at least ceil(active / this) tokens),
``cancel_check_ms`` (10: how often a stream asks ``is_cancelled``),
``intra_op_threads`` (onnxruntime, default 1), ``allow_spinning`` (0), ``cpu_mem_arena`` (0: off,
as onnx_runner.py), ``trim_idle_s`` (0.5: idle this long, the state buffers go and malloc_trim runs),
``stats_interval_s`` (> 0 logs decode-loop timings at INFO, default 0), ``device``.

Continuous batching: ``execute`` only parses and queues a request and returns at once. One background
thread owns every active sequence and loops: prefill newly arrived prompts (one onnxruntime call each, T
= prompt length), then ONE batched onnxruntime call advancing all other sequences by a token, then
sampling, streaming and dropping finished or cancelled sequences. New requests join at the next step;
nobody waits for a whole batch to finish. A second thread does all response IPC (``is_cancelled`` +
``send``, ~0.2-0.3 ms per response, measured) while the decode thread computes the next step; when it
falls behind, a sequence's pending tokens leave together as one response (adaptive chunking: one token
per response while the sender keeps up, larger chunks under load), and with A sequences stepping a
response carries at least ceil(A / responses_per_step) tokens (the first token always leaves alone, for
time to first token): response IPC, not the model, is what limits many streams on CPU. State is stacked
per row: LSTM ``h``/``c`` (L, N, H); GPT's KV cache is one buffer per layer (N, heads, context_length,
D) whose row n holds its positions in columns [0, past_lengths[n]) and is masked beyond, so rows of any
length share one call; the graph returns only the new keys/values, written in place (no cache copy per
step). The batch is rebuilt only when its membership changes. A GPT row that reaches ``context_length``
positions is re-fed with its newest half window (``textgen.window_keep``), exactly as offline.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # textgen.py is copied beside this file
from textgen import (  # noqa: E402
    MAX_STOP_CHARS,
    MAX_STOPS,
    CharVocab,
    SamplingParams,
    StopMatcher,
    needs_reset,
    prompt_ids,
    refeed_ids,
    sample_next,
)

MAX_CHUNK_TOKENS = 64
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


@dataclass(eq=False)
class Sequence:
    """One request being generated. The decode thread owns the model-side fields; the outbox
    (``out_*``, ``queued``) is shared with the sender thread under ``TritonPythonModel.out_lock``."""

    request_id: str
    sender: Any
    history: list[int]  # prompt + generated ids (what a window re-feed reads)
    params: SamplingParams
    rng: np.random.Generator
    max_new: int
    matcher: StopMatcher
    chunk: int
    generated: int = 0
    cache_len: int = 0  # positions held in the model state
    pending: tuple[np.ndarray, ...] | None = None  # state from a prefill, not yet in the batch
    done: bool = False  # no more tokens will be generated (finished, cancelled or failed)
    cancelled: bool = False  # set by the sender thread; the decode thread drops the row at its next step
    out_ids: list[int] = field(default_factory=list)  # generated, not yet sent
    out_text: str = ""
    out_reason: str = ""  # set with the last token: the next response is the final one
    out_error: str = ""
    queued: bool = False  # waiting in the send queue (at most once: a late send carries a bigger chunk)
    checked_at: float = 0.0  # sender thread: when is_cancelled() was last asked
    closed: bool = False  # the final flag was sent (sender thread)


class LstmEngine:
    """h/c state, (L, N, H) with the batch on axis 1."""

    context_length: int | None = None

    def __init__(self, session: Any, layers: int, hidden: int) -> None:
        self.session, self.layers, self.hidden = session, layers, hidden
        self.rows: list[Sequence] = []
        self.h = self.c = np.zeros((layers, 0, hidden), np.float32)

    def prefill(self, seq: Sequence, ids: np.ndarray) -> np.ndarray:
        zeros = np.zeros((self.layers, 1, self.hidden), np.float32)
        logits, h, c = self.session.run(
            None, {"tokens": ids[None, :].astype(np.int64), "h": zeros, "c": zeros}
        )
        seq.pending, seq.cache_len = (h, c), len(ids)
        return logits[0, -1]

    def _sync(self, seqs: list[Sequence]) -> None:
        if self.rows == seqs and all(s.pending is None for s in seqs):
            return
        where = {id(s): i for i, s in enumerate(self.rows)}
        hs, cs = [], []
        for s in seqs:
            if s.pending is not None:
                h, c = s.pending
                s.pending = None
            else:
                i = where[id(s)]
                h, c = self.h[:, i : i + 1], self.c[:, i : i + 1]
            hs.append(h)
            cs.append(c)
        self.h, self.c, self.rows = np.concatenate(hs, axis=1), np.concatenate(cs, axis=1), list(seqs)

    def step(self, seqs: list[Sequence]) -> np.ndarray:
        self._sync(seqs)
        tokens = np.array([[s.history[-1]] for s in seqs], dtype=np.int64)
        logits, self.h, self.c = self.session.run(None, {"tokens": tokens, "h": self.h, "c": self.c})
        for s in seqs:
            s.cache_len += 1
        return logits[:, 0]

    def reset(self) -> None:
        self.rows, self.h, self.c = [], self.h[:, :0], self.c[:, :0]


class GptEngine:
    """KV cache: per layer one buffer (N, heads, context_length, D); row i's positions are columns [0,
    cache_len).

    The graph reads the whole buffers (leftover columns masked) and returns only the new keys and
    values, written here in place: a decode step never copies the cache. The buffers are rebuilt
    only when the batch's membership changes.
    """

    def __init__(self, session: Any, layers: int, heads: int, head_dim: int, context_length: int) -> None:
        self.session, self.context_length = session, context_length
        self.layers, self.heads, self.head_dim = layers, heads, head_dim
        self.rows: list[Sequence] = []
        self.k, self.v = self._empty(0, context_length), self._empty(0, context_length)

    def _empty(self, n: int, p: int) -> list[np.ndarray]:
        return [np.zeros((n, self.heads, p, self.head_dim), np.float32) for _ in range(self.layers)]

    def _feeds(
        self, tokens: np.ndarray, lengths: np.ndarray, k: list[np.ndarray], v: list[np.ndarray]
    ) -> dict[str, np.ndarray]:
        feeds = {"tokens": tokens, "past_lengths": lengths}
        for i in range(self.layers):
            feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = k[i], v[i]
        return feeds

    def prefill(self, seq: Sequence, ids: np.ndarray) -> np.ndarray:
        empty = self._empty(1, 0)
        logits, k, v = self.session.run(
            None, self._feeds(ids[None, :].astype(np.int64), np.zeros(1, np.int64), empty, empty)
        )
        seq.pending, seq.cache_len = (k, v), len(ids)  # (L, 1, H, T, D): columns 0..T-1
        return logits[0, -1]

    def _sync(self, seqs: list[Sequence]) -> None:
        if self.rows == seqs and all(s.pending is None for s in seqs):
            return
        where = {id(s): i for i, s in enumerate(self.rows)}
        k, v = self._empty(len(seqs), self.context_length), self._empty(len(seqs), self.context_length)
        for j, s in enumerate(seqs):
            n = s.cache_len
            for layer in range(self.layers):
                if s.pending is not None:
                    k[layer][j, :, :n], v[layer][j, :, :n] = s.pending[0][layer, 0], s.pending[1][layer, 0]
                else:
                    i = where[id(s)]
                    k[layer][j, :, :n], v[layer][j, :, :n] = self.k[layer][i, :, :n], self.v[layer][i, :, :n]
            s.pending = None
        self.k, self.v, self.rows = k, v, list(seqs)

    def step(self, seqs: list[Sequence]) -> np.ndarray:
        self._sync(seqs)
        tokens = np.array([[s.history[-1]] for s in seqs], dtype=np.int64)
        lengths = np.array([s.cache_len for s in seqs], dtype=np.int64)
        logits, new_k, new_v = self.session.run(None, self._feeds(tokens, lengths, self.k, self.v))
        rows = np.arange(len(seqs))
        for layer in range(self.layers):  # write each row's new position in place: (N, H, D) per layer
            self.k[layer][rows, :, lengths, :] = new_k[layer, :, :, 0, :]
            self.v[layer][rows, :, lengths, :] = new_v[layer, :, :, 0, :]
        for s in seqs:
            s.cache_len += 1
        return logits[:, 0]

    def reset(self) -> None:
        self.rows = []
        self.k, self.v = self._empty(0, self.context_length), self._empty(0, self.context_length)


def _malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: return freed heap pages to the OS (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _tensor(request: Any, name: str) -> np.ndarray | None:
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy().reshape(-1)


def _scalar(request: Any, name: str, default: Any, cast: type) -> Any:
    arr = _tensor(request, name)
    if arr is None or arr.size == 0:
        return default
    if arr.size != 1:
        raise ValueError(f"{name} must hold one value, got {arr.size}")
    return cast(arr[0])


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def ort_session(path: str, params: dict[str, str], args: dict[str, Any]) -> Any:
    """An onnxruntime session as the config asks: ``intra_op_threads``, ``allow_spinning``, ``device``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
    opts.inter_op_num_threads = 1
    spin = params.get("allow_spinning", "0")  # spinning loses badly when cores are shared
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Issue 18, as onnx_runner.py: the default CPU arena keeps the largest step's peak (64 rows of a
    # whole-window KV cache) for the process's life. Off ("1" restores it), memory pattern on.
    opts.enable_cpu_mem_arena = params.get("cpu_mem_arena", "0") == "1"
    opts.enable_mem_pattern = True
    providers: list[Any] = ["CPUExecutionProvider"]
    if params.get("device") == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(
            0, ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))})
        )
    return ort.InferenceSession(path, sess_options=opts, providers=providers)


class TritonPythonModel:
    trim_idle_s = 0.5  # the decode loop's idle trim (translator.py shares the loop)

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "the generator streams: set model_transaction_policy { decoupled: true }"
            )
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        vdir = os.path.join(args["model_repository"], args["model_version"])
        self.logger = pb_utils.Logger
        self.name = args["model_name"]
        self.vocab = CharVocab.load(os.path.join(vdir, params.get("vocab_file", "vocab.json")))
        self.max_new_cap = int(params.get("max_new_tokens", "1024"))
        self.max_prompt_chars = int(params.get("max_prompt_chars", "4096"))
        self.max_active = int(params.get("max_active", "64"))
        self.max_pending = int(params.get("max_pending", str(16 * self.max_active)))
        self.trim_idle_s = float(params.get("trim_idle_s", "0.5"))  # idle this long: reset + malloc_trim
        self.stats_interval = float(params.get("stats_interval_s", "0"))  # > 0: log loop timings (INFO)
        # Response IPC (~0.2 ms each) is what limits many streams: under load a response carries at
        # least ceil(active / responses_per_step) tokens, and is_cancelled() is asked at most every
        # cancel_check_ms per stream once 4+ streams are active (it costs ~0.06 ms; a cancel is still
        # seen within that time).
        # Measured (deploy.loadtest.textgen_triton, 16 streams, 2 cores): 1 per step took
        # GPT from 8.4k to 14.1k tok/s and the LSTM from 20k to 31k; one stream is unchanged.
        self.responses_per_step = max(1, int(params.get("responses_per_step", "1")))
        self.cancel_check_s = float(params.get("cancel_check_ms", "10")) / 1e3
        self.load_chunk = 1  # written by the decode thread each iteration
        self.stats, self.stats_since = self._zero_stats(), time.perf_counter()

        session = ort_session(os.path.join(vdir, params.get("onnx_file", "decoder.onnx")), params, args)
        facts = json.loads(params.get("state", "{}"))
        if params.get("arch") == "gpt":
            self.engine: LstmEngine | GptEngine = GptEngine(
                session,
                int(facts["n_layer"]),
                int(facts["n_head"]),
                int(facts["head_dim"]),
                int(params["context_length"]),
            )
        else:
            self.engine = LstmEngine(session, int(facts["num_layers"]), int(facts["hidden_size"]))
        # Bounded decode state: at most max_state_bytes of KV cache / recurrent state across the rows
        # (twice that for a moment while the batch is rebuilt, when its membership changes).
        per_row = int(params.get("state_bytes_per_sequence", "0"))
        budget = int(params.get("max_state_bytes", "0"))
        if per_row > 0 and budget > 0 and budget // per_row < self.max_active:
            self.max_active = max(1, budget // per_row)
            self.logger.log_info(
                f"{self.name}: max_active lowered to {self.max_active}: {per_row} bytes of state per row, "
                f"max_state_bytes {budget}"
            )

        self._start_threads()

    def _start_threads(self) -> None:
        """The queue, the decode thread and the sender thread (also used by translator.py)."""
        self.cv = threading.Condition()
        self.pending: list[Any] = []
        self.active: list[Any] = []
        self.stopping = False
        self.out_lock = threading.Lock()
        self.outq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"{self.name}-decode", daemon=True)
        self.sender_thread = threading.Thread(target=self._send_loop, name=f"{self.name}-send", daemon=True)
        self.thread.start()
        self.sender_thread.start()

    # --- request intake (Triton's thread) ------------------------------------------------------

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                seq = self._parse(request, sender)
            except (ValueError, TypeError, UnicodeError) as exc:
                self._fail(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            with self.cv:
                if len(self.pending) >= self.max_pending:
                    full = True
                else:
                    full = False
                    self.pending.append(seq)
                    self.cv.notify()
            if full:
                self._fail(sender, "generator queue is full, retry later", pb_utils.TritonError.UNAVAILABLE)
        return None

    def _parse(self, request: Any, sender: Any) -> Sequence:
        prompt_arr = _tensor(request, "PROMPT")
        if prompt_arr is None or prompt_arr.size != 1:
            raise ValueError("PROMPT must be one string")
        prompt = _text(prompt_arr[0])
        if len(prompt) > self.max_prompt_chars:
            raise ValueError(f"PROMPT has {len(prompt)} characters; at most {self.max_prompt_chars}")
        max_new = _scalar(request, "MAX_NEW_TOKENS", 64, int)
        if not 1 <= max_new <= self.max_new_cap:
            raise ValueError(f"MAX_NEW_TOKENS must be in 1..{self.max_new_cap}, got {max_new}")
        seed = _scalar(request, "SEED", -1, int)
        params = SamplingParams(
            temperature=_scalar(request, "TEMPERATURE", 1.0, float),
            top_k=_scalar(request, "TOP_K", 0, int),
            top_p=_scalar(request, "TOP_P", 1.0, float),
            seed=seed if seed >= 0 else None,
        ).validate()
        stop_arr = _tensor(request, "STOP")
        stops = [s for s in (_text(x) for x in (stop_arr if stop_arr is not None else [])) if s]
        if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"STOP takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters")
        chunk = 1
        raw = request.parameters()
        if raw and raw != "{}":
            chunk = int(json.loads(raw).get("chunk_tokens", 1))
            if not 1 <= chunk <= MAX_CHUNK_TOKENS:
                raise ValueError(f"chunk_tokens must be in 1..{MAX_CHUNK_TOKENS}, got {chunk}")
        ids = prompt_ids(self.vocab, prompt, self.engine.context_length)
        return Sequence(
            request.request_id(),
            sender,
            [int(i) for i in ids],
            params,
            params.rng(),
            max_new,
            StopMatcher(stops),
            chunk,
        )

    # --- decode loop (background thread) -------------------------------------------------------

    def _loop(self) -> None:
        worked = False  # since the last trim
        while True:
            with self.cv:
                while not self.pending and not self.active and not self.stopping:
                    if not worked:
                        self.cv.wait()
                    elif not self.cv.wait(self.trim_idle_s):
                        break  # idle for trim_idle_s after some work
                if self.stopping:
                    return
                idle = not self.pending and not self.active
                if not idle:
                    room = max(0, self.max_active - len(self.active))
                    new, self.pending = self.pending[:room], self.pending[room:]
            if idle:
                # Nothing kept while idle (issue 18): drop the last batch's state buffers and give the
                # freed heap back to the OS, on this thread, after trim_idle_s without a request (a
                # trim walks the heap: not on a request's path).
                worked = False
                self.engine.reset()
                _malloc_trim()
                continue
            worked = True
            try:
                self._iteration(new)
            except Exception as exc:  # never let the thread die: fail what was in flight, start clean
                self.logger.log_error(f"{self.name}: decode step failed: {exc!r}")
                for seq in self.active + new:
                    if not seq.done:
                        seq.done = True
                        self._post(seq, error=f"generation failed: {exc}")
                self.active = []
                self.engine.reset()

    def _iteration(self, new: list[Sequence]) -> None:
        st, clock = self.stats, time.perf_counter
        t0 = clock()
        for seq in new:  # prefill: one call per new prompt; it streams its first token right away
            self._advance([seq], self.engine.prefill(seq, np.array(seq.history, np.int64))[None])
        t1 = clock()
        stepping = []
        for seq in self.active:
            if seq.cancelled:  # found by the sender thread's is_cancelled() check
                seq.done = True
            if seq.done:
                continue
            if needs_reset(seq.cache_len, 1, self.engine.context_length):  # GPT window full: re-feed
                ids = refeed_ids(seq.history, self.engine.context_length)
                self._advance([seq], self.engine.prefill(seq, ids)[None])
                continue
            stepping.append(seq)
        t2 = clock()
        self.load_chunk = min(MAX_CHUNK_TOKENS, -(-len(stepping) // self.responses_per_step) or 1)
        if stepping:
            logits = self.engine.step(stepping)
            t3 = clock()
            self._advance(stepping, logits)
            st["step_s"] += t3 - t2
            st["emit_s"] += clock() - t3
        self.active = [s for s in self.active + new if not s.done]
        st["iterations"] += 1
        st["rows"] += len(stepping)
        st["prefills"] += len(new)
        st["prefill_s"] += t1 - t0
        st["refeed_s"] += t2 - t1  # GPT window re-feeds
        if self.stats_interval and clock() - self.stats_since >= self.stats_interval:
            self._log_stats()

    def _log_stats(self) -> None:
        st, wall = self.stats, time.perf_counter() - self.stats_since
        summary = {
            "wall_s": round(wall, 3),
            "tokens_per_s": round((st["rows"] + st["prefills"]) / wall, 1),
            "mean_batch": round(st["rows"] / max(st["iterations"], 1), 2),
            "active": len(self.active),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in st.items()},
        }
        self.logger.log_info(f"{self.name}: decode stats {json.dumps(summary)}")
        self.stats, self.stats_since = self._zero_stats(), time.perf_counter()

    @staticmethod
    def _zero_stats() -> dict[str, float]:
        return {
            "iterations": 0,
            "rows": 0,
            "prefills": 0,
            "prefill_s": 0.0,
            "refeed_s": 0.0,
            "step_s": 0.0,
            "emit_s": 0.0,
            "responses": 0,
            "send_s": 0.0,
            "cancel_check_s": 0.0,
        }

    def _advance(self, seqs: list[Sequence], logits: np.ndarray) -> None:
        tokens = sample_next(logits, [s.params for s in seqs], [s.rng for s in seqs])
        chars = self.vocab.chars
        for seq, tok in zip(seqs, tokens.tolist(), strict=True):
            seq.history.append(tok)
            seq.generated += 1
            text = seq.matcher.push(chars[tok])
            reason = ""
            if seq.matcher.stopped:
                reason = "stop"
            elif seq.generated >= seq.max_new:
                text += seq.matcher.flush()
                reason = "length"
            if reason:
                seq.done = True
            self._post(seq, tok, text, reason)

    def _post(
        self, seq: Sequence, tok: int | None = None, text: str = "", reason: str = "", error: str = ""
    ) -> None:
        """Put output in the sequence's outbox; queue the sequence for the sender unless it already waits.

        The sender thread does the blocking IPC (``send`` ~0.15-0.2 ms, ``is_cancelled`` ~0.06-0.1 ms
        measured) while this thread runs the next step. When the sender falls behind (many streams),
        tokens pile up in the outbox and leave as one multi-token response: fewer, larger responses
        exactly when per-response cost would limit throughput, and one token per response otherwise.
        """
        with self.out_lock:
            if tok is not None:
                seq.out_ids.append(tok)
            seq.out_text += text
            seq.out_reason = seq.out_reason or reason
            seq.out_error = seq.out_error or error
            # The first token leaves at once (time to first token); later ones in chunks, bigger under load.
            due = (
                bool(seq.out_reason or seq.out_error)
                or seq.generated <= 1
                or len(seq.out_ids) >= max(seq.chunk, self.load_chunk)
            )
            if due and not seq.queued:
                seq.queued = True
                self.outq.put(seq)

    # --- sender (background thread): all response IPC ------------------------------------------

    def _send_loop(self) -> None:
        clock = time.perf_counter
        while True:
            seq = self.outq.get()
            if seq is None:
                return
            if seq.closed:  # cancelled earlier; the decode thread had posted one more token
                with self.out_lock:
                    seq.queued = False
                continue
            t0 = clock()
            cancelled = False
            # Few streams: ask before every response (a cancel is seen within one); many: throttled.
            if len(self.active) < 4 or t0 - seq.checked_at >= self.cancel_check_s:
                seq.checked_at = t0
                try:
                    cancelled = seq.sender.is_cancelled()
                except Exception:
                    cancelled = True
            t1 = clock()
            with self.out_lock:
                ids, text, reason, error = seq.out_ids, seq.out_text, seq.out_reason, seq.out_error
                seq.out_ids, seq.out_text, seq.queued = [], "", False
                seq.cancelled = cancelled
                seq.closed = cancelled or bool(reason or error)
            try:
                if cancelled:
                    self._close_cancelled(seq)
                elif error:
                    self._fail(seq.sender, error, pb_utils.TritonError.INTERNAL)
                else:
                    seq.sender.send(self._response(seq, ids, text, reason), flags=FINAL if reason else 0)
            except Exception as exc:  # the client went away since the last is_cancelled() check
                seq.cancelled = seq.closed = True
                try:
                    gone = seq.sender.is_cancelled()
                except Exception:
                    gone = False
                if gone:
                    self._close_cancelled(seq)
                else:
                    self.logger.log_warn(
                        f"{self.name}: request {seq.request_id!r}: send failed ({exc}); dropped"
                    )
            st = self.stats  # read each time: _log_stats swaps the dict
            st["responses"] += 1
            st["cancel_check_s"] += t1 - t0
            st["send_s"] += clock() - t1

    def _response(self, seq: Any, ids: list[int], text: str, reason: str) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
                pb_utils.Tensor("TOKEN_IDS", np.array(ids, dtype=np.int64)),
                pb_utils.Tensor("FINISH_REASON", np.array([reason.encode()], dtype=np.object_)),
            ]
        )

    def _close_cancelled(self, seq: Sequence) -> None:
        self.logger.log_info(
            f"{self.name}: request {seq.request_id!r} cancelled after {seq.generated} tokens"
        )
        try:
            seq.sender.send(flags=FINAL)  # the final flag is still owed to Triton after a cancellation
        except Exception as exc:
            self.logger.log_verbose(f"{self.name}: closing cancelled request {seq.request_id!r}: {exc}")

    @staticmethod
    def _fail(sender: Any, message: str, code: Any) -> None:
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)

    def finalize(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify()
        self.thread.join(timeout=5)
        if self.thread.is_alive():  # stuck in a run: do not race it over the same sequences
            self.logger.log_warn(f"{self.name}: decode thread did not stop within 5 s")
            return
        for seq in self.active + self.pending:  # Triton waited for in-flight requests; these are left-overs
            if not seq.done:
                seq.done = True
                self._post(seq, error="model is unloading")
        self.outq.put(None)  # after everything queued: the sender drains, then stops
        self.sender_thread.join(timeout=5)
