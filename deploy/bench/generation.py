"""Text generation benchmark: tokens/s and time to first token at 1, 4 and 16 streams.

Served path: ``POST /v1/generate`` with ``"stream": true`` through the gateway to Triton's
decoupled ``lstm``/``gpt`` models, driven by the load engine (closed loop, one stream per
worker). Baseline: a naive PyTorch eager loop without a KV cache (the whole sequence is fed
again for every new token), all streams batched together.

Runs only when a text-generation model is in the repository and its checkpoint is built;
otherwise each part reports ``"skipped: model not in repository"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STREAMS = (1, 4, 16)
TEXT_MODELS = ("lstm", "gpt")


def text_models(repository: Path) -> list[str]:
    """Served text-generation models of ``repository`` (by their config's ``task`` parameter)."""
    from export.repository import validate_config_text

    found = []
    for cfg_path in sorted(repository.glob("*/config.pbtxt")):
        try:
            cfg = validate_config_text(cfg_path.read_text(), expect_name=cfg_path.parent.name)
        except Exception:
            continue
        task = cfg.parameters["task"].string_value if "task" in cfg.parameters else ""
        if task == "text_generation":
            found.append(cfg.name)
    return found


def eager_generate(checkpoint: Path, streams: int, prompt_len: int, new_tokens: int) -> dict[str, Any]:
    """Naive PyTorch loop: greedy, no cache, ``streams`` sequences batched; tokens/s and TTFT."""
    import torch

    from training.common import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    vocab = int(ckpt.config.get("vocab_size", 64))
    context = int(ckpt.config.get("context_length", 10_000))
    ids = torch.randint(0, vocab, (streams, prompt_len))
    start = time.perf_counter()
    ttft = None
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(ids[:, -context:])[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            if ttft is None:
                ttft = time.perf_counter() - start
    wall = time.perf_counter() - start
    return {
        "streams": streams,
        "tokens": streams * new_tokens,
        "tokens_per_s": round(streams * new_tokens / wall, 1),
        "tokens_per_s_per_stream": round(new_tokens / wall, 1),
        "ttft_ms": round(1e3 * (ttft or 0.0), 2),
    }


async def gateway_streams(
    url: str,
    model: str,
    duration_s: float,
    warmup_s: float,
    new_tokens: int,
    tick: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    from deploy.loadtest.engine import run_closed
    from deploy.loadtest.report import summarise
    from deploy.loadtest.targets import HttpTarget, generate_request

    target = HttpTarget(
        url, generate_request(max_new_tokens=new_tokens, model=model), name=f"gateway:{model}"
    )
    await target.open(max(STREAMS))
    rows = []
    try:
        for n in STREAMS:
            row = summarise(await run_closed(target, n, duration_s, None, warmup_s))
            rows.append(row)
            if tick:
                tick(f"generate {model} {n} streams: {row.get('tokens_per_s')} tok/s")
    finally:
        await target.close()
    return rows


async def run(
    repository: Path,
    gateway_url: str | None,
    duration_s: float,
    warmup_s: float,
    artifacts: Path = Path("build/artifacts"),
    new_tokens: int = 64,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    served = set(text_models(repository))
    out: dict[str, Any] = {}
    for name in TEXT_MODELS:
        ckpt = artifacts / name / "model.pt"
        if name not in served:
            out[name] = {"status": "skipped: model not in repository"}
            continue
        entry: dict[str, Any] = {"status": "measured"}
        if gateway_url:
            entry["gateway"] = await gateway_streams(
                gateway_url, name, duration_s, warmup_s, new_tokens, tick
            )
        entry["naive_torch_eager"] = (
            [eager_generate(ckpt, n, 64, new_tokens) for n in STREAMS]
            if ckpt.is_file()
            else "skipped: checkpoint not built"
        )
        out[name] = entry
    return out
