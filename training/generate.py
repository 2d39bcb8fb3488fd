"""Train a character-level language model (LSTM or GPT) on Shakespeare's plays.

    python -m training.generate --arch lstm_lm --profile quick --out build/artifacts/lstm
    python -m training.generate --arch gpt --profile quick --out build/artifacts/gpt

On a machine whose cores other processes share, pass ``--threads 1``: with 2 intra-op threads on 2
busy cores a training step took 5x the CPU time (threads spin and wait on each other).

Writes model.pt (build arguments + weights + vocabulary), metrics.json (validation perplexity
against a unigram baseline, a generated sample) and training_curve.png. ``generate`` below is
the offline reference decoder: the Triton model reproduces its output for the same prompt,
seed and sampling settings (both use ``serving.textgen``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from serving.textgen import (
    CharVocab,
    SamplingParams,
    StopMatcher,
    needs_reset,
    prompt_ids,
    refeed_ids,
    sample_next,
)
from training.common import (
    CHECKPOINT_NAME,
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
from training.data.shakespeare import DESCRIPTION, load_splits
from training.models import build_model, config_class

TASK = "text_generation"
ARCHS = ("lstm_lm", "gpt")
# Per-profile recipe, per architecture where it differs: rounds ("epochs") of `steps` optimiser steps on
# batches of `batch` windows of `context` characters, peak learning rate, corpus limit, validation windows,
# model overrides. quick is sized for ~3 min on one idle CPU core: an LSTM step (32 x 128) costs ~0.17
# CPU-s, a GPT step (8 x 128) ~0.08 CPU-s. The GPT gets small batches because, in minutes, the number of
# updates is what counts: batch 8 reached val ppl 5.9 where batch 32 with the same compute reached 7.4
# (batch 4: 5.9 again). Dropout is off for tiny/quick: minutes of training underfit, and its masks cost
# ~15% of a CPU step.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "epochs": 2,
        "steps": {"lstm_lm": 12, "gpt": 12},
        "batch": {"lstm_lm": 16, "gpt": 16},
        "context": 32,
        "lr": {"lstm_lm": 1e-2, "gpt": 1e-2},
        "limit_chars": 200_000,
        "val_windows": 16,
        "sample_chars": 80,
        "model": {
            "lstm_lm": {"embed_dim": 16, "hidden_size": 48, "num_layers": 1, "dropout": 0.0},
            "gpt": {"d_model": 32, "n_layer": 2, "n_head": 2, "dropout": 0.0},
        },
    },
    "quick": {
        "epochs": 8,
        "steps": {"lstm_lm": 110, "gpt": 280},
        "batch": {"lstm_lm": 32, "gpt": 8},
        "context": 128,
        "lr": {"lstm_lm": 4e-3, "gpt": 3e-3},
        "limit_chars": None,
        "val_windows": 256,
        "sample_chars": 400,
        "model": {"lstm_lm": {"dropout": 0.0}, "gpt": {"dropout": 0.0}},
    },
    "full": {
        "epochs": 25,
        "steps": {"lstm_lm": 400, "gpt": 400},
        "batch": {"lstm_lm": 64, "gpt": 64},
        "context": 256,
        "lr": {"lstm_lm": 2e-3, "gpt": 1e-3},
        "limit_chars": None,
        "val_windows": 1024,
        "sample_chars": 600,
        "model": {
            "lstm_lm": {"embed_dim": 256, "hidden_size": 768, "num_layers": 3, "dropout": 0.2},
            "gpt": {"d_model": 384, "n_layer": 6, "n_head": 6, "dropout": 0.2},
        },
    },
}
SAMPLE_PROMPT = "KING.\n"
SAMPLE_PARAMS = SamplingParams(temperature=0.8, top_k=0, top_p=0.95, seed=0)


# --- offline reference decoder ---------------------------------------------------------------------


class TorchDecoder:
    """One sequence through a model's ``step`` API; the state lives here (KV cache or h/c)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.is_gpt = hasattr(model, "empty_cache")
        self.context_length: int | None = int(model.cfg.context_length) if self.is_gpt else None
        self.cache_len = 0
        self.state: tuple[torch.Tensor, ...] = ()

    @torch.no_grad()
    def feed(self, ids: np.ndarray, reset: bool) -> np.ndarray:
        """Feed ``ids`` (after clearing the state when ``reset``); return the last position's logits (V,)."""
        tokens = torch.from_numpy(np.asarray(ids, dtype=np.int64)).unsqueeze(0)
        if reset:
            self.cache_len = 0
            self.state = self.model.empty_cache(1) if self.is_gpt else self.model.init_state(1)
        if self.is_gpt:  # the cache holds exactly cache_len columns; append the new ones
            lengths = torch.tensor([self.cache_len], dtype=torch.int64)
            logits, k, v = self.model.step(tokens, lengths, *self.state)
            self.state = (torch.cat([self.state[0], k], dim=3), torch.cat([self.state[1], v], dim=3))
        else:
            logits, h, c = self.model.step(tokens, *self.state)
            self.state = (h, c)
        self.cache_len += tokens.shape[1]
        return logits[0, -1].float().numpy()


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str  # "length" | "stop"


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Token-by-token steps are tiny ops: extra intra-op threads only spin (measured 100x slower on a
    busy 2-core machine), so decode on one thread and restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(
    model: nn.Module,
    vocab: CharVocab,
    prompt: str,
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    stop: tuple[str, ...] = (),
) -> Generation:
    """The reference decoding loop; serving/triton/models/generator.py runs the same one, batched."""
    with single_thread():
        return _generate(model, vocab, prompt, max_new_tokens, params.validate(), stop)


def _generate(
    model: nn.Module,
    vocab: CharVocab,
    prompt: str,
    max_new_tokens: int,
    params: SamplingParams,
    stop: tuple[str, ...],
) -> Generation:
    rng = params.rng()
    dec = TorchDecoder(model)
    history = list(prompt_ids(vocab, prompt, dec.context_length))
    logits = dec.feed(np.array(history), reset=True)
    matcher = StopMatcher(stop)
    text, generated, reason = "", [], "length"
    for i in range(max_new_tokens):
        tok = int(sample_next(logits[None], [params], [rng])[0])
        history.append(tok)
        generated.append(tok)
        text += matcher.push(vocab.chars[tok])
        if matcher.stopped:
            reason = "stop"
            break
        if i == max_new_tokens - 1:
            break  # the last token is never fed: its logits are not needed
        if needs_reset(dec.cache_len, 1, dec.context_length):
            logits = dec.feed(refeed_ids(history, dec.context_length), reset=True)
        else:
            logits = dec.feed(np.array([tok]), reset=False)
    if reason == "length":
        text += matcher.flush()
    return Generation(text, generated, reason)


# --- training -----------------------------------------------------------------------------------


def batches(
    data: np.ndarray, batch: int, context: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x (N, T) and the next-character targets y (N, T)."""
    starts = torch.randint(0, len(data) - context - 1, (batch,), generator=gen).numpy()
    idx = starts[:, None] + np.arange(context + 1)[None, :]
    w = torch.from_numpy(data[idx].astype(np.int64))
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model: nn.Module, data: np.ndarray, context: int, windows: int, device: torch.device) -> float:
    """Mean next-character cross-entropy (nats) over ``windows`` evenly spaced validation windows."""
    model.eval()
    starts = np.linspace(0, len(data) - context - 1, windows).astype(np.int64)
    total, count = 0.0, 0
    for s in range(0, windows, 64):
        idx = starts[s : s + 64, None] + np.arange(context + 1)[None, :]
        w = torch.from_numpy(data[idx].astype(np.int64)).to(device)
        logits = model(w[:, :-1]).float()
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += w[:, 1:].numel()
    return total / count


def autocast_for(device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a loss scaler); none on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def arch_facts(arch: str, cfg: Any) -> dict[str, Any]:
    """What export needs to size state tensors without reading the module."""
    if arch == "gpt":
        return {
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "head_dim": cfg.head_dim,
            "d_model": cfg.d_model,
            "state": "kv_cache",
            "tie_weights": cfg.tie_weights,
        }
    return {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "state": "lstm"}


def main(argv: list[str] | None = None) -> dict:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/gpt")
    p.add_argument("--arch", default="gpt", choices=ARCHS, help="registered language model")
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    epochs = args.epochs or prof["epochs"]
    context = prof["context"]

    data = load_splits(prof["limit_chars"])
    cfg = replace(
        config_class(args.arch)(),
        vocab_size=len(data.vocab),
        context_length=context,
        **prof["model"][args.arch],
    )
    model = build_model(args.arch, cfg).to(device)
    steps, lr, batch = prof["steps"][args.arch], prof["lr"][args.arch], prof["batch"][args.arch]
    # fused: one kernel for all parameters instead of ~10 small ops each (measured 1.5x per CPU step)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98), fused=True)
    total_steps = epochs * steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=0.1)
    autocast, scaler = autocast_for(device)
    gen = torch.Generator().manual_seed(args.seed)
    hist = History()
    unigram = data.unigram_perplexity()

    with Timer() as timer:
        bar = progress(range(epochs), args.no_progress, desc=f"train {args.arch}", unit="round")
        for _ in bar:
            model.train()
            total = 0.0
            for _ in range(steps):
                x, y = batches(data.train, batch, context, gen)
                x, y = x.to(device), y.to(device)
                with autocast():
                    logits = model(x)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                total += loss.item()
            with autocast():
                val_loss = evaluate(model, data.val, context, prof["val_windows"], device)
            hist.log(train_loss=total / steps, val_loss=val_loss, val_perplexity=math.exp(val_loss))
            bar.set_postfix(loss=f"{total / steps:.3f}", val_ppl=f"{math.exp(val_loss):.2f}")

    model.cpu().eval()
    val_loss = evaluate(
        model, data.val, context, prof["val_windows"], torch.device("cpu")
    )  # float32, as served
    sample = generate(model, data.vocab, SAMPLE_PROMPT, prof["sample_chars"], SAMPLE_PARAMS)
    metrics = {
        "task": TASK,
        "arch": args.arch,
        "profile": args.profile,
        "epochs": epochs,
        "steps": total_steps,
        "parameters": count_parameters(model),
        "train_seconds": round(timer.seconds, 2),
        "tokens_seen": total_steps * batch * context,
        "batch": batch,
        "val_loss": val_loss,
        "val_perplexity": math.exp(val_loss),
        "unigram_perplexity": unigram,
        "val_characters_scored": prof["val_windows"] * context,
        "vocab_size": len(data.vocab),
        "context_length": context,
        "dataset": DESCRIPTION,
        "validation_works": data.val_works,
        "sample": {
            "prompt": SAMPLE_PROMPT,
            "text": sample.text,
            "temperature": SAMPLE_PARAMS.temperature,
            "top_p": SAMPLE_PARAMS.top_p,
            "seed": SAMPLE_PARAMS.seed,
        },
    }
    meta = {
        "vocabulary": data.vocab.to_dict(),
        "context_length": context,
        "arch_facts": arch_facts(args.arch, cfg),
        "metrics": {
            k: metrics[k]
            for k in ("val_perplexity", "unigram_perplexity", "val_loss", "profile", "epochs", "steps")
        },
        "dataset": DESCRIPTION,
        "validation_works": data.val_works,
        "sample": metrics["sample"],
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, args.arch, cfg, model, TASK, meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out,
        hist,
        f"{args.arch} on Shakespeare: val perplexity {math.exp(val_loss):.2f} (unigram {unigram:.1f})",
        groups=[("train_loss", "val_loss"), ("val_perplexity",)],
    )
    print(
        f"val perplexity {math.exp(val_loss):.3f} vs unigram {unigram:.2f} ({timer.seconds:.1f}s); wrote "
        f"{args.out}"
    )
    print(f"sample ({SAMPLE_PROMPT!r}, T={SAMPLE_PARAMS.temperature}):\n{SAMPLE_PROMPT}{sample.text}")
    return metrics


if __name__ == "__main__":
    main()
