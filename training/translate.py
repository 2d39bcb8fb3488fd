"""Train a character-level transducer (seq2seq with attention, or an encoder-decoder Transformer) on
spelled-out numbers -> digits.

    python -m training.translate --arch seq2seq_attn --profile quick --out build/artifacts/seq2seq
    python -m training.translate --arch transformer_seq2seq --profile quick \
        --out build/artifacts/transformer \
        --compare-with build/artifacts/seq2seq

Pass ``--threads 1`` on a machine whose cores other processes share (see training/generate.py).

Writes model.pt (build arguments + weights + vocabularies + arch facts), metrics.json (held-out
exact-match accuracy and character error rate, overall and per input-length bucket), training_curve.png,
length_buckets.png (accuracy and CER per bucket; with ``--compare-with DIR`` the other run's buckets
beside this one's) and attention_map.png (cross-attention of held-out examples, one panel each).

``greedy`` below is the offline reference decoder: the served model (export/tasks/translation.py,
serving/triton/models/translator.py) reproduces its output for the same text, and returns the same
attention rows (one per output character, over the source characters).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from training.common import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    History,
    Timer,
    base_parser,
    count_parameters,
    plot_curves,
    progress,
    save_checkpoint,
    setup_run,
    write_metrics,
)
from training.data import numbers
from training.data.numbers import BOS, EOS, PAD, SOURCE, TARGET, Example
from training.models import build_model, config_class

TASK = "translation"
ARCHS = ("seq2seq_attn", "transformer_seq2seq")
BUCKETS_NAME = "length_buckets.png"
ATTENTION_NAME = "attention_map.png"
# Held-out examples are drawn with this seed offset, so no profile or --seed trains on them.
EVAL_SEED = 10_000
# Per-profile recipe: rounds ("epochs") of `steps` optimiser steps on fresh batches of `batch` examples,
# peak learning rate, held-out examples, model overrides per architecture; "epochs" is one number or
# one per architecture.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "epochs": 2,
        "steps": 10,
        "batch": 32,
        "lr": {"seq2seq_attn": 1e-2, "transformer_seq2seq": 3e-3},
        "eval_examples": 100,
        "model": {
            "seq2seq_attn": {"embed_dim": 16, "enc_hidden": 16, "hidden_size": 32, "attn_dim": 16},
            "transformer_seq2seq": {"d_model": 32, "n_head": 2, "enc_layers": 1, "dec_layers": 1},
        },
    },
    "quick": {
        # seq2seq: a quarter-size GRU at a higher peak lr; measured (1 thread, load ~15 on 2 shared
        # cores): 190 CPU-s for the whole run, held-out exact match 0.9995 (0.984 after 300 steps).
        # The Transformer keeps its recipe for now: 1000 steps, exact match 0.893, ~14 min.
        "epochs": {"seq2seq_attn": 6, "transformer_seq2seq": 10},
        "steps": 100,
        "batch": 64,
        "lr": {"seq2seq_attn": 5e-3, "transformer_seq2seq": 1e-3},
        "eval_examples": 2000,
        "model": {
            "seq2seq_attn": {"embed_dim": 32, "enc_hidden": 64, "hidden_size": 128, "attn_dim": 64},
            "transformer_seq2seq": {},
        },
    },
    "full": {
        "epochs": 30,
        "steps": 300,
        "batch": 128,
        "lr": {"seq2seq_attn": 2e-3, "transformer_seq2seq": 5e-4},
        "eval_examples": 10000,
        "model": {
            "seq2seq_attn": {"enc_hidden": 256, "hidden_size": 512, "attn_dim": 256, "dropout": 0.1},
            "transformer_seq2seq": {
                "d_model": 256,
                "n_head": 8,
                "enc_layers": 4,
                "dec_layers": 4,
                "dropout": 0.1,
            },
        },
    },
}


# --- offline reference decoder -----------------------------------------------------------------------


@dataclass
class Translation:
    ids: list[int]  # output token ids, EOS excluded
    text: str
    attention: list[list[float]]  # one row per output character, over the source characters


def encode_sources(texts: list[str]) -> torch.Tensor:
    """Normalised source texts -> (N, S) int64, PAD-padded on the right."""
    ids = [SOURCE.encode(t) for t in texts]
    src = torch.full((len(ids), max(len(i) for i in ids)), PAD, dtype=torch.int64)
    for n, row in enumerate(ids):
        src[n, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return src


@torch.no_grad()
def greedy(net: nn.Module, src: torch.Tensor) -> list[Translation]:
    """Greedy decoding of a batch through the models' ``encode``/``step`` API (what is served).

    src (N, S) int64, PAD-padded. Every row decodes until EOS or ``max_target_len`` positions.
    """
    model: Any = net.eval()  # encode/step/cfg: the transducers' own API
    cfg = model.cfg
    n = src.shape[0]
    mask = src != PAD
    lengths = mask.sum(1).tolist()
    tok = torch.full((n,), BOS, dtype=torch.int64)
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    if hasattr(model, "empty_cache"):  # Transformer: cross K/V once, a growing self-attention cache
        cross_k, cross_v = model.encode(src)
        past_k, past_v = model.empty_cache(n)
        for t in range(cfg.max_target_len):
            pos = torch.full((n,), t, dtype=torch.int64)
            logits, k, v, attn = model.step(tok, pos, past_k, past_v, cross_k, cross_v, mask)
            past_k, past_v = torch.cat([past_k, k], dim=3), torch.cat([past_v, v], dim=3)
            tok = logits.argmax(-1)
            steps.append((tok, attn))
            if bool((torch.stack([s[0] for s in steps], 1) == EOS).any(1).all()):
                break
    else:  # RNN: memory and keys once, the GRU state per step
        memory, keys, h = model.encode(src)
        for _ in range(cfg.max_target_len):
            logits, h, attn = model.step(tok, h, memory, keys, mask)
            tok = logits.argmax(-1)
            steps.append((tok, attn))
            if bool((torch.stack([s[0] for s in steps], 1) == EOS).any(1).all()):
                break
    toks = torch.stack([s[0] for s in steps], 1).tolist()  # (N, T)
    attns = torch.stack([s[1] for s in steps], 1)  # (N, T, S)
    out = []
    for i in range(n):
        ids = toks[i][: toks[i].index(EOS)] if EOS in toks[i] else toks[i]
        att = attns[i, : len(ids), : lengths[i]].tolist()
        out.append(Translation(ids, TARGET.decode(ids), att))
    return out


def translate(model: nn.Module, text: str) -> Translation:
    """One text, as a request sends it (normalised first; ``ValueError`` outside the vocabulary)."""
    return greedy(model, encode_sources([numbers.normalize(text)]))[0]


# --- metrics ----------------------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute: cost 1 each)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Exact match (fraction of outputs equal to the reference) and CER (edits / reference characters)."""
    edits = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    return {
        "exact_match": sum(r == h for r, h in zip(refs, hyps, strict=True)) / max(len(refs), 1),
        "cer": edits / max(sum(len(r) for r in refs), 1),
        "examples": len(refs),
    }


def evaluate(model: nn.Module, items: list[Example], batch: int = 256) -> dict[str, Any]:
    """Greedy outputs on ``items`` scored overall and per input-length bucket."""
    hyps: list[str] = []
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        hyps += [t.text for t in greedy(model, encode_sources([e.source for e in chunk]))]
    refs = [e.target for e in items]
    by_bucket: dict[str, dict[str, float]] = {}
    for label in numbers.bucket_labels():
        idx = [i for i, e in enumerate(items) if numbers.bucket_of(len(e.source)) == label]
        if idx:
            by_bucket[label] = score([refs[i] for i in idx], [hyps[i] for i in idx])
    errors = [
        {"source": e.source, "target": e.target, "output": h}
        for e, h in zip(items, hyps, strict=True)
        if h != e.target
    ]
    return {"overall": score(refs, hyps), "by_length": by_bucket, "errors": errors[:20]}


# --- plots ------------------------------------------------------------------------------------------------


def plot_buckets(out: Path, runs: dict[str, dict[str, Any]]) -> Path:
    """Exact match and CER per input-length bucket, one bar group per run (arch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = numbers.bucket_labels()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(runs), 1)
    for r, (name, by) in enumerate(runs.items()):
        xs = np.arange(len(labels)) + (r - (len(runs) - 1) / 2) * width
        for ax, key in zip(axes, ("exact_match", "cer"), strict=True):
            ys = [by.get(lb, {}).get(key, math.nan) for lb in labels]
            ax.bar(xs, ys, width, label=name)
    for ax, title in zip(
        axes, ("exact match (higher is better)", "character error rate (lower is better)"), strict=True
    ):
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_xlabel("input length (characters)")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    fig.suptitle("spelled-out numbers -> digits, held-out split, by input length")
    fig.tight_layout()
    path = out / BUCKETS_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attention(out: Path, model: nn.Module, sources: list[str], title: str) -> Path:
    """Cross-attention of each source (rows: output digits, columns: input characters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sources), 1, figsize=(14, 2.2 * len(sources)), squeeze=False)
    for ax, text in zip(axes[:, 0], sources, strict=True):
        tr = translate(model, text)
        att = np.array(tr.attention) if tr.attention else np.zeros((1, len(text)))
        ax.imshow(att, aspect="auto", cmap="viridis", vmin=0.0)
        ax.set_xticks(range(len(text)), list(text), fontsize=7)
        ax.set_yticks(range(len(tr.text)), list(tr.text), fontsize=8)
        ax.set_title(f"{text!r} -> {tr.text!r}", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    path = out / ATTENTION_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- training ---------------------------------------------------------------------------------------------


def arch_facts(arch: str, cfg: Any) -> dict[str, Any]:
    """What export and the server need to size state tensors without reading the module."""
    if arch == "transformer_seq2seq":
        return {
            "state": "kv_cache",
            "dec_layers": cfg.dec_layers,
            "n_head": cfg.n_head,
            "head_dim": cfg.head_dim,
            "max_source_len": cfg.max_source_len,
        }
    return {
        "state": "rnn",
        "hidden_size": cfg.hidden_size,
        "memory_dim": 2 * cfg.enc_hidden,
        "attn_dim": cfg.attn_dim,
    }


def model_config(arch: str, profile: str) -> Any:
    return replace(
        config_class(arch)(),
        src_vocab=len(SOURCE),
        tgt_vocab=len(TARGET),
        max_target_len=numbers.MAX_DIGITS + 1,
        **PROFILES[profile]["model"][arch],
    )


def train_batch(rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
    src, tin, tout = numbers.batch([numbers.sample(rng, held_out=False) for _ in range(size)])
    return torch.from_numpy(src), torch.from_numpy(tin), torch.from_numpy(tout)


ATTENTION_EXAMPLES = (
    "seven hundred and five million, thirty thousand, two hundred nineteen",
    "five million seven",
    "forty-two thousand six hundred",
)


def main(argv: list[str] | None = None) -> dict:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/seq2seq")
    p.add_argument("--arch", default="seq2seq_attn", choices=ARCHS, help="registered transducer")
    p.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="another run's folder: its buckets join length_buckets.png",
    )
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    epochs = args.epochs or (
        prof["epochs"][args.arch] if isinstance(prof["epochs"], dict) else prof["epochs"]
    )
    steps, batch, lr = prof["steps"], prof["batch"], prof["lr"][args.arch]

    cfg = model_config(args.arch, args.profile)
    model = build_model(args.arch, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    total_steps = epochs * steps
    # warm-up of at least 2 steps: OneCycleLR divides by zero on a 1-step phase (short runs)
    warmup = max(0.1, 2.0 / total_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=warmup)
    rng = np.random.default_rng(args.seed)
    held_out = numbers.examples(prof["eval_examples"], EVAL_SEED + args.seed, held_out=True)
    monitor = held_out[: min(256, len(held_out))]
    hist = History()

    with Timer() as timer:
        bar = progress(range(epochs), args.no_progress, desc=f"train {args.arch}", unit="round")
        for _ in bar:
            model.train()
            total = 0.0
            for _ in range(steps):
                src, tin, tout = (t.to(device) for t in train_batch(rng, batch))
                loss = model.loss(src, tin, tout)  # type: ignore[operator]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                total += loss.item()
            model.cpu()
            m = evaluate(model, monitor)["overall"]
            model.to(device)
            hist.log(train_loss=total / steps, monitor_exact_match=m["exact_match"], monitor_cer=m["cer"])
            bar.set_postfix(loss=f"{total / steps:.3f}", em=f"{m['exact_match']:.3f}")

    model.cpu().eval()
    with Timer() as eval_timer:
        result = evaluate(model, held_out)
    overall = result["overall"]
    metrics = {
        "task": TASK,
        "arch": args.arch,
        "profile": args.profile,
        "epochs": epochs,
        "steps": total_steps,
        "batch": batch,
        "examples_seen": total_steps * batch,
        "parameters": count_parameters(model),
        "train_seconds": round(timer.seconds, 2),
        "eval_seconds": round(eval_timer.seconds, 2),
        "exact_match": overall["exact_match"],
        "cer": overall["cer"],
        "held_out_examples": overall["examples"],
        "by_length": result["by_length"],
        "errors": result["errors"],
        "length_buckets": list(numbers.LENGTH_BUCKETS),
        "dataset": numbers.DESCRIPTION,
    }
    meta = {
        "source_chars": numbers.SOURCE_CHARS,
        "target_chars": numbers.TARGET_CHARS,
        "specials": list(numbers.SPECIALS),
        "arch_facts": arch_facts(args.arch, cfg),
        "max_target_len": cfg.max_target_len,
        "metrics": {k: metrics[k] for k in ("exact_match", "cer", "by_length", "profile", "epochs", "steps")},
        "dataset": numbers.DESCRIPTION,
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, args.arch, cfg, model, TASK, meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out,
        hist,
        f"{args.arch}: held-out exact match {overall['exact_match']:.3f}, CER {overall['cer']:.4f}",
        groups=[("train_loss",), ("monitor_exact_match", "monitor_cer")],
    )
    runs = {args.arch: result["by_length"]}
    if args.compare_with is not None:
        other = json.loads((args.compare_with / METRICS_NAME).read_text())
        runs = {other["arch"]: other["by_length"], **runs}
    plot_buckets(args.out, runs)
    plot_attention(
        args.out, model, list(ATTENTION_EXAMPLES), f"{args.arch}: cross-attention (held-out style inputs)"
    )
    print(
        f"{args.arch}: exact match {overall['exact_match']:.4f}, CER {overall['cer']:.4f} on "
        f"{overall['examples']} held-out examples ({timer.seconds:.1f}s training); wrote {args.out}"
    )
    for label, s in result["by_length"].items():
        print(
            f"  {label:>6} chars: exact match {s['exact_match']:.4f}  CER {s['cer']:.4f}  (n={s['examples']})"
        )
    return metrics


if __name__ == "__main__":
    main()
