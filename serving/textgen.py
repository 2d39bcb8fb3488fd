"""Character-level text generation pieces shared by training and by the Triton generator.

One implementation of everything that decides *which* characters come out: the character
vocabulary (tokeniser), the sampling function, stop-string matching and the context-window
policy. The offline PyTorch generator (``training/generate.py``) and the Triton model
(``serving/triton/models/generator.py``, which gets this file copied beside it by the exporter)
both import it, so with the same seed (or temperature 0) they emit the same text. Pure numpy and
stdlib: it runs inside Triton's Python backend, where there is no torch.

Sampling contract (per sequence, per generated token):

* ``temperature == 0``: greedy, ``argmax`` of the logits (first index on ties); no random draw.
* otherwise: logits / temperature, keep the ``top_k`` largest (0 = all), keep the smallest set of
  most probable tokens whose mass reaches ``top_p`` (1 = all), then invert the CDF (vocabulary
  order) at ONE uniform draw from the sequence's own ``numpy.random.Generator(PCG64(seed))``.
  One draw per token keeps the random stream independent of batching and of other requests.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_FORMAT = 1

# Stop strings per request: the Triton generator enforces these and the gateway refuses more up front.
MAX_STOPS = 8
MAX_STOP_CHARS = 64

# Typographic characters a user may paste into a prompt, folded onto the corpus's plain ASCII.
_FOLD = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "--",
    "\u2015": "--",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\t": " ",
    "\r": "",
}


def normalise(text: str) -> str:
    """Fold prompt text onto the corpus alphabet: typographic quotes/dashes, accents (é -> e), CR."""
    if text.isascii():
        return text.replace("\r", "").replace("\t", " ")
    out = []
    for ch in text:
        if ch in _FOLD:
            out.append(_FOLD[ch])
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        out.append("".join(c for c in decomposed if not unicodedata.combining(c)) or ch)
    return "".join(out)


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> token ids. Ids are positions in ``chars``; unknown characters become ``fallback``."""

    chars: tuple[str, ...]
    fallback: str = " "

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary entries must be distinct single characters")
        if self.fallback not in self.chars:
            raise ValueError(f"fallback {self.fallback!r} is not in the vocabulary")
        index = {c: i for i, c in enumerate(self.chars)}
        object.__setattr__(self, "_index", index)
        lut = np.full(128, index[self.fallback], dtype=np.int64)  # ASCII fast path for the corpus
        for c, i in index.items():
            if ord(c) < 128:
                lut[ord(c)] = i
        object.__setattr__(self, "_lut", lut)

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def fallback_id(self) -> int:
        return self._index[self.fallback]  # type: ignore[attr-defined]

    def encode(self, text: str) -> np.ndarray:
        """(len,) int64 ids; characters outside the vocabulary map to the fallback."""
        text = normalise(text)
        if text.isascii():
            return self._lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]  # type: ignore[attr-defined]
        index, fb = self._index, self.fallback_id  # type: ignore[attr-defined]
        return np.fromiter((index.get(c, fb) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"format": VOCAB_FORMAT, "chars": list(self.chars), "fallback": self.fallback}

    @classmethod
    def from_dict(cls, d: dict) -> CharVocab:
        if int(d.get("format", VOCAB_FORMAT)) != VOCAB_FORMAT:
            raise ValueError(f"unsupported vocabulary format {d.get('format')!r}")
        return cls(tuple(d["chars"]), d.get("fallback", " "))

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=True, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path | str) -> CharVocab:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- sampling ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    seed: int | None = None  # None = fresh OS entropy (not reproducible)

    def validate(self) -> SamplingParams:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        return self

    def rng(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.seed))


def draw_uniforms(params: Sequence[SamplingParams], rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One uniform per sampled row, none for greedy rows (their random stream does not advance)."""
    return np.array([rng.random() if p.temperature > 0 else 0.0 for p, rng in zip(params, rngs, strict=True)])


def sample_next(
    logits: np.ndarray, params: Sequence[SamplingParams], rngs: Sequence[np.random.Generator]
) -> np.ndarray:
    """(N, V) logits of the next token -> (N,) int64 ids, each row with its own params and RNG.

    Row-wise operations only (float64, sequential cumsums), so a row's result does not depend
    on which other rows share the batch.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != len(params):
        raise ValueError(f"logits must be (N, V) with N = {len(params)}, got {logits.shape}")
    n, v = logits.shape
    u = draw_uniforms(params, rngs)
    out = np.argmax(logits, axis=1).astype(np.int64)  # greedy rows keep this
    rows = np.array([i for i, p in enumerate(params) if p.temperature > 0], dtype=np.int64)
    if rows.size == 0:
        return out
    temp = np.array([params[i].temperature for i in rows], dtype=np.float64)[:, None]
    z = logits[rows].astype(np.float64) / temp
    top_k = np.array([params[i].top_k for i in rows])
    limited = (top_k > 0) & (top_k < v)
    if limited.any():
        kth = -np.sort(-z, axis=1)[np.arange(len(rows)), np.clip(top_k, 1, v) - 1]  # k-th largest value
        z = np.where(limited[:, None] & (z < kth[:, None]), -np.inf, z)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= np.cumsum(p, axis=1)[:, -1:]
    top_p = np.array([params[i].top_p for i in rows], dtype=np.float64)
    nucleus = top_p < 1.0
    if nucleus.any():
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        mass_before = np.cumsum(sorted_p, axis=1) - sorted_p
        keep_sorted = (mass_before < top_p[:, None]) | ~nucleus[:, None]  # the first token is always kept
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
    cdf = np.cumsum(p, axis=1)
    target = u[rows] * cdf[:, -1]
    picked = np.array([np.searchsorted(cdf[j], target[j], side="right") for j in range(len(rows))])
    out[rows] = np.minimum(picked, v - 1)
    return out


# --- stop strings --------------------------------------------------------------------------------


class StopMatcher:
    """Releases generated text as it becomes safe; ends at the first stop string (excluded).

    Text that could still grow into a stop string is held back, so a client never receives a
    partial stop string that later turns out to be one.
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.released = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add generated text; return what may be sent now. Sets ``stopped`` on a stop string."""
        if self.stopped:
            return ""
        start = len(self.text)
        self.text += piece
        if not self.stops:
            out, self.released = self.text[self.released :], len(self.text)
            return out
        cut = None
        for s in self.stops:
            i = self.text.find(s, max(0, start - len(s) + 1))
            if i >= 0 and (cut is None or i < cut):
                cut = i
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            out, self.released = self.text[self.released :], len(self.text)
            return out
        hold = 0
        for s in self.stops:  # longest suffix of the text that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(self.text)), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        safe = len(self.text) - hold
        out = self.text[self.released : safe] if safe > self.released else ""
        self.released = max(self.released, safe)
        return out

    def flush(self) -> str:
        """At the end (length limit): release what was held back."""
        out, self.released = self.text[self.released :], len(self.text)
        return out


# --- context window ------------------------------------------------------------------------------


def window_keep(context_length: int) -> int:
    """Tokens kept when a fixed-context model (GPT) runs out of positions: the newest half.

    Half, not more: a re-feed costs a prefill of ``keep`` tokens every ``context - keep`` tokens, so
    half is 3x cheaper per token than 3/4 (measured: 16% of a 16-stream decode loop at 3/4), and
    64 characters of context are plenty for a character model.
    """
    return max(1, context_length // 2)


def needs_reset(cache_len: int, n_new: int, context_length: int | None) -> bool:
    """True when feeding ``n_new`` tokens after ``cache_len`` cached ones would pass the context."""
    return context_length is not None and cache_len + n_new > context_length


def refeed_ids(history: np.ndarray | Sequence[int], context_length: int | None) -> np.ndarray:
    """After a reset, the state is rebuilt from the newest ``window_keep`` tokens of the history."""
    hist = np.asarray(history, dtype=np.int64)
    if context_length is None:
        return hist
    return hist[-min(len(hist), window_keep(context_length)) :]


def prompt_ids(
    vocab: CharVocab, prompt: str, context_length: int | None, start_char: str = "\n"
) -> np.ndarray:
    """Encode a prompt; an empty prompt starts from ``start_char``; too long a prompt keeps its end."""
    ids = vocab.encode(prompt)
    if ids.size == 0:
        ids = vocab.encode(start_char)
    if context_length is not None and ids.size > context_length:
        ids = refeed_ids(ids, context_length)
    return ids


# --- chat template -------------------------------------------------------------------------------

CHAT_ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE_FORMAT = 1

# The models are character-level Shakespeare: a turn is written the way the corpus writes a
# speech (a speaker line "NAME:" then the text, a blank line after), so the generator continues
# in the voice it was trained on, and "\n\n" (the end of a speech) ends the assistant's turn.
# Plain ``str.format`` with the fields ``{content}`` and ``{role}``: no template engine.
DEFAULT_CHAT_TEMPLATE: dict = {
    "format": CHAT_TEMPLATE_FORMAT,
    "turns": {
        "system": "{content}\n\n",
        "user": "USER:\n{content}\n\n",
        "assistant": "ASSISTANT:\n{content}\n\n",
    },
    "generation_prompt": "ASSISTANT:\n",  # appended last: the model speaks next
    "stop": ["\n\n"],  # end-of-turn strings, added to the request's own stop strings
}


def check_chat_template(template: dict) -> dict:
    """The template as given, or ValueError (unknown format, a role without a turn, bad fields)."""
    if int(template.get("format", 0)) != CHAT_TEMPLATE_FORMAT:
        raise ValueError(f"unsupported chat template format {template.get('format')!r}")
    turns = template.get("turns", {})
    missing = [r for r in CHAT_ROLES if not isinstance(turns.get(r), str)]
    if missing:
        raise ValueError(f"chat template has no turn for {missing}")
    for role, turn in turns.items():
        turn.format(content="", role=role)  # raises on a field other than content/role
    if not isinstance(template.get("generation_prompt", ""), str):
        raise ValueError("chat template generation_prompt must be a string")
    stops = template.get("stop", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ValueError("chat template stop must be a list of non-empty strings")
    return template


def render_chat(messages: Sequence[dict], template: dict | None = None) -> str:
    """OpenAI-style ``[{"role", "content"}, ...]`` -> the prompt the generator continues.

    Each message becomes its role's turn with ``content`` filled in, in order, then the template's
    generation prompt. Raises ValueError on no messages, an unknown role or non-string content.
    """
    template = DEFAULT_CHAT_TEMPLATE if template is None else template
    if not messages:
        raise ValueError("messages must not be empty")
    turns = template["turns"]
    parts = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in turns:
            raise ValueError(f"messages[{i}].role: {role!r} is not one of {sorted(turns)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        parts.append(turns[role].format(content=content, role=role))
    return "".join(parts) + template.get("generation_prompt", "")
