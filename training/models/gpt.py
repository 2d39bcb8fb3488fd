"""GPT-style decoder-only Transformer (Radford et al. 2018/2019) for character-level text.

Token + learned positional embeddings, ``n_layer`` pre-norm blocks (LayerNorm -> causal
multi-head self-attention -> residual, LayerNorm -> GELU MLP -> residual), a final LayerNorm and
a linear head whose weight is optionally tied to the token embedding.

``forward`` scores whole sequences (training). ``step`` is the incremental decoder that export
writes to ONNX, with an explicit key/value cache that the caller owns:

* ``past_k``, ``past_v``: per layer ``(N, n_head, P, head_dim)``; either a sequence of ``n_layer`` such
  tensors (what export uses: one graph input per layer, since slicing a stacked cache costs a copy of it
  in onnxruntime, 17% of a 16-row step) or one stacked ``(n_layer, ...)`` tensor. Row ``n`` holds its
  ``past_lengths[n]`` cached positions in columns ``[0, past_lengths[n])``; the columns after that are
  free capacity whose contents are ignored (masked). So a server keeps ONE fixed buffer with ``P =
  context_length`` columns for all rows, whatever their lengths, and never copies it: rows of different
  lengths share a batch.
* ``past_lengths``: ``(N,)`` int64, also each row's next position (learned positions are absolute).
* ``tokens``: ``(N, T)``; ``T > 1`` with ``P = 0`` is the prompt prefill, ``T = 1`` a decode step.

It returns logits ``(N, T, V)`` and ``new_k``/``new_v`` ``(n_layer, N, n_head, T, head_dim)``: only
the new positions, which the caller writes at columns ``[past_lengths[n], past_lengths[n] + T)``.
Attention reads the cache without concatenating it (past and new scores are softmaxed together),
so a step costs no copy of the cache. Measured in onnxruntime (1 thread) with the quick model, 16
rows at up to 128 positions: 1.18 ms per step for a graph that concatenated a stacked cache and
returned it whole, 0.48 ms for this one. A row may use positions ``< context_length`` only: the caller
re-feeds a shorter window when a sequence runs out (``serving.textgen.needs_reset``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class GPTConfig:
    vocab_size: int = 65
    context_length: int = 128  # number of learned positions
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.1
    tie_weights: bool = True  # head.weight is the token embedding (fewer parameters, usually better)

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if min(self.vocab_size - 1, self.context_length, self.n_layer, self.n_head, self.mlp_ratio) < 1:
            raise ValueError(f"invalid GPT config: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # (N, T, C) -> (N, T, 3C)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (N, T, C) -> (N, H, T, D)
        return tuple(z.view(n, t, self.n_head, self.head_dim).transpose(1, 2) for z in (q, k, v))  # type: ignore[return-value]

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        n, _, t, _ = y.shape
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(n, t, self.n_head * self.head_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) -> (N, T, C), causal over T."""
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self._merge(y)

    def step(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        past_ok: torch.Tensor,
        causal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, T, C), past (N, H, P, D), past_ok (N, 1, 1, P) and causal (T, T) bool
        -> y (N, T, C), new k/v (N, H, T, D)."""
        q, k, v = self._heads(x)
        scale = 1.0 / math.sqrt(self.head_dim)
        s_past = (q @ past_k.transpose(-2, -1)) * scale  # (N, H, T, P)
        s_past = s_past.masked_fill(~past_ok, float("-inf"))
        s_new = (q @ k.transpose(-2, -1)) * scale  # (N, H, T, T)
        s_new = s_new.masked_fill(~causal, float("-inf"))  # each query sees itself: no all -inf row
        p = torch.softmax(torch.cat([s_past, s_new], dim=-1), dim=-1)
        n_past = past_k.shape[2]
        y = p[..., :n_past] @ past_v + p[..., n_past:] @ v  # (N, H, T, D)
        return self._merge(y), k, v


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def step(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        past_ok: torch.Tensor,
        causal: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn.step(self.ln1(x), past_k, past_v, past_ok, causal)
        x = x + a
        return x + self.mlp(self.ln2(x)), k, v


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)  # (N, T) -> (N, T, C)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)  # positions 0..context_length-1
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # (N, T, C) -> (N, T, V)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def empty_cache(
        self, batch: int, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An empty (P = 0) cache: two (n_layer, N, n_head, 0, head_dim) tensors."""
        shape = (self.cfg.n_layer, batch, self.cfg.n_head, 0, self.cfg.head_dim)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, T) int64, T <= context_length -> logits (N, T, V)."""
        t = tokens.shape[1]
        pos = torch.arange(t, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))  # (N, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def step(
        self,
        tokens: torch.Tensor,
        past_lengths: torch.Tensor,
        past_k: torch.Tensor | Sequence[torch.Tensor],
        past_v: torch.Tensor | Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Incremental decode against a caller-owned KV cache (layout in the module docstring).

        tokens (N, T) int64, past_lengths (N,) int64, past_k/past_v: L x (N, H, P, D) (a sequence or a
        stacked tensor) -> logits (N, T, V), new_k/new_v (L, N, H, T, D).
        """
        t = tokens.shape[1]
        steps = torch.arange(t, device=tokens.device)
        pos = past_lengths.unsqueeze(1) + steps.unsqueeze(0)  # (N, T) absolute positions
        x = self.tok_emb(tokens) + self.pos_emb(pos)
        cols = torch.arange(past_k[0].shape[2], device=tokens.device)
        past_ok = (cols.unsqueeze(0) < past_lengths.unsqueeze(1))[:, None, None, :]  # (N, 1, 1, P)
        causal = steps.unsqueeze(0) <= steps.unsqueeze(1)  # (T, T): key j <= query i
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, past_k[i], past_v[i], past_ok, causal)
            ks.append(k)
            vs.append(v)
        return self.head(self.ln_f(x)), torch.stack(ks), torch.stack(vs)


@register("gpt", GPTConfig)
def build_gpt(cfg: GPTConfig) -> nn.Module:
    return GPT(cfg)
