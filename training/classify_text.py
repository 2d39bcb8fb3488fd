"""Transfer learning with a BERT-style encoder: pre-train with masked-language modelling on Shakespeare,
fine-tune for the genre of a passage (comedy / history / tragedy), and compare with the same
architecture trained from scratch on the same labelled passages for the same steps.

    python -m training.classify_text --profile quick --threads 1 --out build/artifacts/bert

Data (training/data/shakespeare.py): pre-training reads every work except the six test plays (poems
included, no labels used); the labelled set is ``per_play`` random passages of each of the 31 other
plays; the test set is ``eval_per_play`` evenly spaced passages of each test play (two per genre, so
the test set is balanced and macro-F1 and accuracy agree on what chance is: 1/3). Split by play, so
no passage, and no character name, of a test play is seen in any phase.

Tokens: ``[PAD]`` = 0, ``[CLS]`` = 1, ``[MASK]`` = 2, then the corpus' character vocabulary (the
generator's) from id 3; a passage is ``[CLS]`` + up to ``max_len - 1`` characters. Characters outside
the vocabulary map to its fallback, a space (as for the generators). MLM (Devlin et al.): 15% of the
character positions are picked; of those 80% become ``[MASK]``, 10% a random character, 10% stay.

Writes model.pt (the fine-tuned encoder; meta holds the vocabulary, specials, labels and both runs'
metrics), metrics.json, transfer.json (the fine-tuned vs scratch table and the gap) and
training_curve.png.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from serving.textgen import CharVocab
from training.common import (
    CHECKPOINT_NAME,
    History,
    Timer,
    base_parser,
    count_parameters,
    plot_curves,
    save_checkpoint,
    setup_run,
    write_metrics,
)
from training.data.shakespeare import GENRE_DESCRIPTION, GENRE_OF, GENRES, GenreSplits, load_genre_splits
from training.models import build_model, config_class

TASK = "text_classification"
ARCH = "bert"
REPORT_NAME = "transfer.json"
PAD, CLS, MASK = 0, 1, 2
SPECIALS = ("[PAD]", "[CLS]", "[MASK]")
OFFSET = len(SPECIALS)  # character id i is token OFFSET + i
MASK_RATE, MASK_TOKEN, MASK_RANDOM = 0.15, 0.8, 0.1
# Per profile: MLM steps/batch/lr, fine-tune (and scratch) steps/batch/lr, labelled passages per play,
# test passages per play, model overrides, corpus limit (tiny).
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "pre_steps": 6,
        "pre_batch": 8,
        "pre_lr": 3e-3,
        "ft_steps": 6,
        "ft_batch": 8,
        "ft_lr": 1e-3,
        "per_play": 4,
        "eval_per_play": 4,
        "eval_every": 3,
        "limit_chars": 20_000,
        "model": {"d_model": 32, "n_head": 2, "n_layer": 1, "max_len": 33, "dropout": 0.0},
    },
    "quick": {
        "pre_steps": 1000,
        "pre_batch": 32,
        "pre_lr": 2e-3,
        "ft_steps": 300,
        "ft_batch": 32,
        "ft_lr": 5e-4,
        "per_play": 24,
        "eval_per_play": 100,
        "eval_every": 100,
        "limit_chars": None,
        "model": {"d_model": 128, "n_head": 4, "n_layer": 2, "max_len": 65, "dropout": 0.1},
    },
    "full": {
        "pre_steps": 20_000,
        "pre_batch": 128,
        "pre_lr": 1e-3,
        "ft_steps": 2000,
        "ft_batch": 64,
        "ft_lr": 2e-4,
        "per_play": 24,
        "eval_per_play": 200,
        "eval_every": 500,
        "limit_chars": None,
        "model": {"d_model": 256, "n_head": 8, "n_layer": 6, "max_len": 257, "dropout": 0.1},
    },
}


# --- tokens -----------------------------------------------------------------------------------------------


def encode_texts(vocab: CharVocab, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> tokens (N, T) int64 ([CLS] + characters, PAD on the right; T = longest, <= max_len) and
    attention_mask (N, T) int64. Longer texts are refused (``ValueError``), as the gateway refuses them."""
    rows = [vocab.encode(t) + OFFSET for t in texts]
    too_long = [i for i, r in enumerate(rows) if len(r) + 1 > max_len]
    if too_long:
        raise ValueError(f"texts {too_long} exceed {max_len - 1} characters")
    t = 1 + max(len(r) for r in rows)
    tokens = torch.full((len(rows), t), PAD, dtype=torch.int64)
    tokens[:, 0] = CLS
    for n, r in enumerate(rows):
        tokens[n, 1 : 1 + len(r)] = torch.from_numpy(r)
    return tokens, (tokens != PAD).long()


def windows(ids: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
    """Character windows -> tokens (N, 1 + length) with [CLS] first."""
    chars = np.stack([ids[s : s + length] for s in starts]).astype(np.int64) + OFFSET
    return torch.from_numpy(np.concatenate([np.full((len(starts), 1), CLS), chars], axis=1))


def mask_tokens(
    tokens: torch.Tensor, vocab_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: tokens (N, T) -> (input (N, T), targets (N, T), -100 where not picked)."""
    chars = tokens >= OFFSET
    picked = (torch.rand(tokens.shape, generator=gen) < MASK_RATE) & chars
    picked[:, 1] |= ~picked.any(1)  # at least one target per row
    roll = torch.rand(tokens.shape, generator=gen)
    inp = tokens.clone()
    inp[picked & (roll < MASK_TOKEN)] = MASK
    rand = picked & (roll >= MASK_TOKEN) & (roll < MASK_TOKEN + MASK_RANDOM)
    inp[rand] = torch.randint(OFFSET, vocab_size, tokens.shape, generator=gen)[rand]
    return inp, torch.where(picked, tokens, torch.full_like(tokens, -100))


# --- data -------------------------------------------------------------------------------------------------


def labelled_set(
    works: dict[str, np.ndarray], per_play: int, length: int, rng: np.random.Generator, spread: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_play`` passages of each play (random, or evenly spaced with ``spread``) -> tokens, labels."""
    toks, labels = [], []
    for work, ids in works.items():
        hi = len(ids) - length
        starts = np.linspace(0, hi, per_play).astype(np.int64) if spread else rng.integers(0, hi, per_play)
        toks.append(windows(ids, starts, length))
        labels += [GENRES.index(GENRE_OF[work])] * per_play
    return torch.cat(toks), torch.tensor(labels, dtype=torch.int64)


# --- metrics ----------------------------------------------------------------------------------------------


def scores(labels: torch.Tensor, preds: torch.Tensor) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: truth, columns: prediction)."""
    k = len(GENRES)
    conf = torch.zeros(k, k, dtype=torch.int64)
    for t, p in zip(labels.tolist(), preds.tolist(), strict=True):
        conf[t, p] += 1
    f1 = {}
    for c, name in enumerate(GENRES):
        tp = conf[c, c].item()
        prec = tp / max(conf[:, c].sum().item(), 1)
        rec = tp / max(conf[c].sum().item(), 1)
        f1[name] = 0.0 if tp == 0 else 2 * prec * rec / (prec + rec)
    return {
        "accuracy": (labels == preds).float().mean().item(),
        "macro_f1": sum(f1.values()) / k,
        "f1": f1,
        "confusion": conf.tolist(),
        "examples": len(labels),
    }


@torch.no_grad()
def evaluate(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict:
    model.eval()
    net: Any = model
    preds = torch.cat([net.classify(tokens[s : s + batch]).argmax(-1) for s in range(0, len(tokens), batch)])
    return scores(labels, preds)


# --- training ---------------------------------------------------------------------------------------------


def pretrain(model: nn.Module, data: GenreSplits, prof: dict, seed: int, hist: History) -> float:
    net: Any = model
    length = net.cfg.max_len - 1
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=prof["pre_lr"], weight_decay=0.01, betas=(0.9, 0.98))
    steps = prof["pre_steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=prof["pre_lr"], total_steps=steps, pct_start=max(0.06, 2.0 / steps)
    )
    model.train()
    total, last = 0.0, float("nan")
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(data.pretrain) - length, prof["pre_batch"])
        inp, tgt = mask_tokens(windows(data.pretrain, starts, length), net.cfg.vocab_size, gen)
        loss = net.mlm_loss(inp, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total += loss.item()
        if step % prof["eval_every"] == 0 or step == steps:
            last = total / (
                prof["eval_every"] if step % prof["eval_every"] == 0 else step % prof["eval_every"]
            )
            hist.log(mlm_loss=last)
            total = 0.0
    return last


def finetune(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    prof: dict,
    seed: int,
    hist: History,
    name: str,
) -> dict[str, Any]:
    """Cross-entropy on [CLS] (class-weighted: the labelled plays are 13/8/10 comedies/histories/
    tragedies); the same seed gives both runs the same batches in the same order."""
    tokens, labels = train
    counts = torch.bincount(labels, minlength=len(GENRES)).float()
    weight = counts.sum() / (len(GENRES) * counts.clamp(min=1))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=prof["ft_lr"], weight_decay=0.01)
    steps = prof["ft_steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=prof["ft_lr"], total_steps=steps, pct_start=max(0.1, 2.0 / steps)
    )
    net: Any = model
    for step in range(1, steps + 1):
        model.train()
        idx = torch.randint(0, len(tokens), (prof["ft_batch"],), generator=gen)
        loss = F.cross_entropy(net.classify(tokens[idx]), labels[idx], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % prof["eval_every"] == 0 or step == steps:
            m = evaluate(model, *test)
            hist.log(**{f"{name}_test_accuracy": m["accuracy"], f"{name}_test_macro_f1": m["macro_f1"]})
    return evaluate(model, *test)


def model_config(profile: str, vocab: CharVocab) -> Any:
    return replace(
        config_class(ARCH)(),
        vocab_size=OFFSET + len(vocab),
        num_labels=len(GENRES),
        pad_id=PAD,
        **PROFILES[profile]["model"],
    )


def main(argv: list[str] | None = None) -> dict:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/bert")
    args = p.parse_args(argv)
    setup_run(args)  # CPU only: the quick profile is sized for 2 CPU cores; --device is not used
    prof = dict(PROFILES[args.profile])
    if args.epochs:  # one "epoch" here scales both phases' step counts
        prof["pre_steps"] *= args.epochs
        prof["ft_steps"] *= args.epochs
    data = load_genre_splits(prof["limit_chars"])
    cfg = model_config(args.profile, data.vocab)
    length = cfg.max_len - 1
    rng = np.random.default_rng(args.seed)
    train = labelled_set(data.train, prof["per_play"], length, rng)
    test = labelled_set(data.test, prof["eval_per_play"], length, rng, spread=True)
    hist = History()

    torch.manual_seed(args.seed)
    base = build_model(ARCH, cfg)
    scratch = copy.deepcopy(base)  # same initial weights: the only difference is pre-training
    with Timer() as t_pre:
        mlm_loss = pretrain(base, data, prof, args.seed, hist)
    with Timer() as t_ft:
        tuned = finetune(base, train, test, prof, args.seed + 1, hist, "finetuned")
    with Timer() as t_sc:
        plain = finetune(scratch, train, test, prof, args.seed + 1, hist, "scratch")

    gap = {k: tuned[k] - plain[k] for k in ("accuracy", "macro_f1")}
    report = {
        "task": TASK,
        "arch": ARCH,
        "profile": args.profile,
        "finetuned": tuned,
        "scratch": plain,
        "gap": gap,
        "pretrain": {"steps": prof["pre_steps"], "batch": prof["pre_batch"], "final_mlm_loss": mlm_loss},
        "finetune": {"steps": prof["ft_steps"], "batch": prof["ft_batch"], "lr": prof["ft_lr"]},
        "labelled_passages": len(train[0]),
        "test_passages": len(test[0]),
        "passage_chars": length,
        "seconds": {
            "pretrain": round(t_pre.seconds, 1),
            "finetune": round(t_ft.seconds, 1),
            "scratch": round(t_sc.seconds, 1),
            "total": round(t_pre.seconds + t_ft.seconds + t_sc.seconds, 1),
        },
        "parameters": count_parameters(base),
        "dataset": GENRE_DESCRIPTION,
    }
    short = {
        "finetuned": {k: tuned[k] for k in ("accuracy", "macro_f1")},
        "scratch": {k: plain[k] for k in ("accuracy", "macro_f1")},
        "gap": gap,
        "profile": args.profile,
    }
    meta = {
        "vocab": data.vocab.to_dict(),
        "specials": list(SPECIALS),
        "char_offset": OFFSET,
        "labels": list(GENRES),
        "max_len": cfg.max_len,
        "metrics": short,
        "dataset": GENRE_DESCRIPTION,
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, ARCH, cfg, base, TASK, meta)
    write_metrics(args.out, report, hist)
    (args.out / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    plot_curves(
        args.out,
        hist,
        f"BERT genre: fine-tuned macro-F1 {tuned['macro_f1']:.3f} vs scratch {plain['macro_f1']:.3f}",
        groups=[
            ("mlm_loss",),
            (  # test-set curves of both runs
                "finetuned_test_macro_f1",
                "scratch_test_macro_f1",
                "finetuned_test_accuracy",
                "scratch_test_accuracy",
            ),
        ],
    )
    t, s = tuned, plain
    print(
        f"genre on {len(test[0])} test passages: fine-tuned accuracy {t['accuracy']:.3f} macro-F1 "
        f"{t['macro_f1']:.3f}; scratch accuracy {s['accuracy']:.3f} macro-F1 {s['macro_f1']:.3f}; gap "
        f"{gap['accuracy']:+.3f} / {gap['macro_f1']:+.3f} ({report['seconds']['total']:.0f}s) -> {args.out}"
    )
    return report


if __name__ == "__main__":
    main()
