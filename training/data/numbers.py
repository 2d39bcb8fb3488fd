"""Spelled-out English numbers -> digits: a transduction task with one exact answer, generated offline.

``"three hundred and forty-two thousand, five hundred seven"`` -> ``"342507"``. Each example draws
a number with 1..``MAX_DIGITS`` digits (digit count uniform, so long inputs are as common as short
ones), zeroes some of its three-digit groups or digits now and then (``"five million seven"`` ->
``"5000007"``: which zeros to write depends on scale words far away, the long-range part), and
spells it in one of several styles: hyphen or space in ``forty-two``, optional British ``and`` after
``hundred``, optional commas between groups, ``a hundred``/``one hundred``. The input grows to ~110
characters; difficulty grows with it.

Held-out split: a number >= ``SHARED_BELOW`` is held out when ``is_held_out(n)`` (a fixed hash, 10%),
so the held-out numbers from 1000 up are never seen in training; below 1000 there are too few numbers
to keep some back (the words ``seven`` or ``twelve`` must be learned from somewhere), so those occur
in both. ``parse`` is an independent reader of the same language, used by tests to check that every
generated example is exact.

Vocabularies: source = specials + ``SOURCE_CHARS``, target = specials + digits. Text outside the
source vocabulary is refused (``normalize`` raises ``ValueError``); upper case is folded and runs of
white space collapse to one space first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<s>", "</s>")
SOURCE_CHARS = " ,-" + "abcdefghijklmnopqrstuvwxyz"
TARGET_CHARS = "0123456789"
MAX_DIGITS = 9  # up to 999,999,999
SHARED_BELOW = 1000
# Input-length buckets (characters) for the per-length metrics; the last one is open.
LENGTH_BUCKETS = (0, 20, 40, 60, 80)
DESCRIPTION = (
    f"spelled-out English numbers (1..{MAX_DIGITS} digits, several styles) -> digits, generated offline by "
    "training/data/numbers.py; held out: numbers >= 1000 with a fixed hash (10%), never trained on"
)

ONES = [  # fmt: skip
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**6, "million"), (10**3, "thousand"))


@dataclass(frozen=True)
class Style:
    hyphen: bool = True  # "forty-two" vs "forty two"
    british_and: bool = False  # "one hundred and five"
    commas: bool = False  # "two million, five thousand"
    a_hundred: bool = False  # "a hundred" for a leading 100..199 (only when it starts the text)


def random_style(rng: np.random.Generator) -> Style:
    hyphen, british_and, commas, a_hundred = (rng.random(4) < (0.6, 0.3, 0.3, 0.2)).tolist()
    return Style(hyphen, british_and, commas, a_hundred)


def _below_hundred(n: int, style: Style) -> str:
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    if not ones:
        return TENS[tens]
    return TENS[tens] + ("-" if style.hyphen else " ") + ONES[ones]


def _below_thousand(n: int, style: Style, first: bool) -> str:
    hundreds, rest = divmod(n, 100)
    words = []
    if hundreds:
        lead = "a" if style.a_hundred and first and hundreds == 1 else ONES[hundreds]
        words.append(f"{lead} hundred")
        if rest and style.british_and:
            words.append("and")
    if rest:
        words.append(_below_hundred(rest, style))
    return " ".join(words)


def spell(n: int, style: Style = Style()) -> str:
    """The words for ``0 <= n < 10**MAX_DIGITS`` in ``style``."""
    if not 0 <= n < 10**MAX_DIGITS:
        raise ValueError(f"{n} is outside 0..{10**MAX_DIGITS - 1}")
    if n == 0:
        return "zero"
    groups: list[str] = []
    rest = n
    for scale, name in SCALES:
        g, rest = divmod(rest, scale)
        if g:
            groups.append(f"{_below_thousand(g, style, not groups)} {name}")
    if rest:
        groups.append(_below_thousand(rest, style, not groups))
    return (", " if style.commas else " ").join(groups)


_WORD_VALUES = {w: i for i, w in enumerate(ONES)} | {w: 10 * i for i, w in enumerate(TENS) if w}


def parse(text: str) -> int:
    """Read words back to a number (independent of ``spell``: tests check one against the other)."""
    total, group = 0, 0
    for word in re.split(r"[ ,\-]+", text.strip()):
        if word in ("and", ""):
            continue
        if word == "a":
            group += 1
        elif word == "hundred":
            group *= 100
        elif word in ("thousand", "million"):
            total += group * (1000 if word == "thousand" else 10**6)
            group = 0
        else:
            group += _WORD_VALUES[word]
    return total + group


def sample_number(rng: np.random.Generator, digits: int) -> int:
    n = int(rng.integers(0 if digits == 1 else 10 ** (digits - 1), 10**digits))
    if digits > 3 and rng.random() < 0.35:  # zero some lower groups/digits: "five million seven"
        s = list(str(n))
        for i in range(1, len(s)):
            if rng.random() < 0.5:
                s[i] = "0"
        n = int("".join(s))
    return n


def is_held_out(n: int) -> bool:
    return n >= SHARED_BELOW and (n * 2654435761) % 2**32 % 10 == 0


@dataclass(frozen=True)
class Example:
    source: str
    target: str


def sample(rng: np.random.Generator, held_out: bool) -> Example:
    """One example from the training (``held_out=False``) or held-out distribution; both draw the
    digit count uniformly first, so the held-out split has the same lengths as training."""
    digits = int(rng.integers(1, MAX_DIGITS + 1))
    while True:
        n = sample_number(rng, digits)
        if n < SHARED_BELOW or is_held_out(n) == held_out:
            return Example(spell(n, random_style(rng)), str(n))


def examples(count: int, seed: int, held_out: bool) -> list[Example]:
    rng = np.random.default_rng(seed)
    return [sample(rng, held_out) for _ in range(count)]


def bucket_of(length: int) -> str:
    """The label of the input-length bucket ``length`` falls in, e.g. ``"20-39"`` or ``"80+"``."""
    edges = LENGTH_BUCKETS
    for lo, hi in zip(edges, edges[1:], strict=False):
        if lo <= length < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


def bucket_labels() -> list[str]:
    return [bucket_of(e) for e in LENGTH_BUCKETS]


class Vocab:
    """Characters <-> ids with the three specials first (PAD=0, BOS=1, EOS=2)."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.tokens = SPECIALS + tuple(chars)
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        """Ids up to (not including) the first EOS; PAD/BOS are dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return "".join(out)


SOURCE = Vocab(SOURCE_CHARS)
TARGET = Vocab(TARGET_CHARS)


def normalize(text: str) -> str:
    """What a model reads: lower case, white space collapsed and trimmed; other characters are refused."""
    text = " ".join(text.lower().split())
    bad = sorted({c for c in text if c not in SOURCE.index})
    if bad:
        raise ValueError(f"characters outside the vocabulary ({SOURCE_CHARS!r}): {''.join(bad)!r}")
    if not text:
        raise ValueError("text is empty")
    return text


def batch(
    items: list[Example], max_target_len: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """src (N, S) PAD-padded, tgt_in (N, T) = BOS + target, tgt_out (N, T) = target + EOS (PAD-padded)."""
    src = [SOURCE.encode(e.source) for e in items]
    tgt = [TARGET.encode(e.target) for e in items]
    s_len = max(len(s) for s in src)
    t_len = max(len(t) for t in tgt) + 1
    if max_target_len is not None and t_len > max_target_len:
        raise ValueError(f"a target needs {t_len} positions; the model has {max_target_len}")
    xs = np.full((len(items), s_len), PAD, np.int64)
    tin = np.full((len(items), t_len), PAD, np.int64)
    tout = np.full((len(items), t_len), PAD, np.int64)
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        xs[i, : len(s)] = s
        tin[i, : len(t) + 1] = [BOS, *t]
        tout[i, : len(t) + 1] = [*t, EOS]
    return xs, tin, tout
