"""Encoder-decoder Transformer ("Attention is all you need", Vaswani et al. 2017), character level, pre-norm.

Encoder: token + learned position embeddings, ``enc_layers`` blocks (self-attention over the source,
padding masked; GELU MLP). Decoder: ``dec_layers`` blocks (causal self-attention, cross-attention to
the encoder output, MLP), a final LayerNorm and a linear head tied to the target embedding.

Served graphs (the decoder runs one token at a time against caches the caller owns, as in ``gpt.py``):

* ``encode(src)``: src (N, S) int64 -> cross_k, cross_v (L, N, H, S, D): every decoder layer's keys and
  values of the encoder output, computed once per request (a step never touches the encoder again).
* ``step(tokens, past_lengths, past_k, past_v, cross_k, cross_v, src_mask)``: tokens (N,) int64,
  past_lengths (N,) int64 (also each row's position), past_k/past_v (L, N, H, P, D) self-attention cache
  whose row n holds ``past_lengths[n]`` valid columns (the rest is masked, so rows of different lengths
  share one fixed buffer), cross_k/cross_v padded to the batch's longest source and src_mask (N, S) bool
  -> logits (N, V), new_k/new_v (L, N, H, 1, D) (the caller writes them at column past_lengths[n]),
  attention (N, S): the last layer's cross-attention, averaged over heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class TransformerSeq2SeqConfig:
    src_vocab: int = 32
    tgt_vocab: int = 13
    d_model: int = 128
    n_head: int = 4
    enc_layers: int = 3
    dec_layers: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_source_len: int = 128  # learned source positions: longer inputs are refused
    max_target_len: int = 16  # decoding positions, EOS included
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if min(self.enc_layers, self.dec_layers, self.max_source_len, self.max_target_len) < 1:
            raise ValueError(f"invalid Transformer config: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value inputs (self- or cross-attention)."""

    def __init__(self, cfg: TransformerSeq2SeqConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)  # (N, S, C) -> (N, S, 2C)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.p_drop = cfg.dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) -> (N, H, T, D)."""
        n, t, _ = x.shape
        return x.view(n, t, self.n_head, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(N, H, T, D) -> (N, T, C), projected."""
        n, _, t, _ = y.shape
        return self.drop(self.proj(y.transpose(1, 2).reshape(n, t, self.n_head * self.head_dim)))

    def forward(
        self, x: torch.Tensor, kv_in: torch.Tensor, mask: torch.Tensor | None, causal: bool = False
    ) -> torch.Tensor:
        """x (N, T, C), kv_in (N, S, C), mask (N, 1, 1, S) bool (True = attend) -> (N, T, C)."""
        k, v = self.keys_values(kv_in)
        y = F.scaled_dot_product_attention(
            self.split(self.q(x)),
            k,
            v,
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.p_drop if self.training else 0.0,
        )
        return self.merge(y)

    def weights(self, q: torch.Tensor, k: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """q (N, H, T, D), k (N, H, S, D), ok broadcastable to (N, H, T, S) -> softmaxed (N, H, T, S)."""
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        return torch.softmax(s.masked_fill(~ok, float("-inf")), dim=-1)


def mlp(cfg: TransformerSeq2SeqConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
        nn.GELU(),
        nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
        nn.Dropout(cfg.dropout),
    )


class EncoderBlock(nn.Module):
    def __init__(self, cfg: TransformerSeq2SeqConfig) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.mlp = nn.LayerNorm(cfg.d_model), mlp(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: TransformerSeq2SeqConfig) -> None:
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln3, self.mlp = nn.LayerNorm(cfg.d_model), mlp(cfg)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.self_attn(h, h, None, causal=True)
        x = x + self.cross_attn(self.ln2(x), memory, src_mask)
        return x + self.mlp(self.ln3(x))

    def step(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        past_ok: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        src_ok: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, 1, C), past (N, H, P, D), past_ok (N, 1, 1, P + 1) (the last column is the new position),
        cross (N, H, S, D), src_ok (N, 1, 1, S)
        -> x (N, 1, C), new k/v (N, H, 1, D), cross-attention (N, H, 1, S)."""
        sa = self.self_attn
        h = self.ln1(x)
        q, (k, v) = sa.split(sa.q(h)), sa.keys_values(h)
        # past and the new position softmaxed together; the new one always counts (no all -inf row)
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        x = x + sa.merge(sa.weights(q, keys, past_ok) @ values)
        ca = self.cross_attn
        p = ca.weights(ca.split(ca.q(self.ln2(x))), cross_k, src_ok)
        x = x + ca.merge(p @ cross_v)
        return x + self.mlp(self.ln3(x)), k, v, p


class TransformerSeq2Seq(nn.Module):
    def __init__(self, cfg: TransformerSeq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_emb = nn.Embedding(cfg.src_vocab, cfg.d_model)  # (N, S) -> (N, S, C)
        self.src_pos = nn.Embedding(cfg.max_source_len, cfg.d_model)
        self.tgt_emb = nn.Embedding(cfg.tgt_vocab, cfg.d_model)  # (N, T) -> (N, T, C)
        self.tgt_pos = nn.Embedding(cfg.max_target_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.enc = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.enc_layers))
        self.enc_ln = nn.LayerNorm(cfg.d_model)
        self.dec = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.dec_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.tgt_vocab, bias=False)  # (N, T, C) -> (N, T, V)
        self.head.weight = self.tgt_emb.weight
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def memory(self, src: torch.Tensor) -> torch.Tensor:
        """src (N, S) -> encoder output (N, S, C)."""
        pos = torch.arange(src.shape[1], device=src.device)
        x = self.drop(self.src_emb(src) + self.src_pos(pos))
        mask = (src != self.cfg.pad_id)[:, None, None, :]  # (N, 1, 1, S)
        for block in self.enc:
            x = block(x, mask)
        return self.enc_ln(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (N, S) -> cross_k, cross_v (L, N, H, S, D)."""
        mem = self.memory(src)
        kv = [block.cross_attn.keys_values(mem) for block in self.dec]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An empty (P = 0) self-attention cache: two (L, N, H, 0, D) tensors."""
        shape = (self.cfg.dec_layers, batch, self.cfg.n_head, 0, self.cfg.head_dim)
        return torch.zeros(shape), torch.zeros(shape)

    def step(
        self,
        tokens: torch.Tensor,
        past_lengths: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        src_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder position per row (layout in the module docstring)
        -> logits (N, V), new_k/new_v (L, N, H, 1, D), attention (N, S)."""
        x = self.tgt_emb(tokens.unsqueeze(1)) + self.tgt_pos(past_lengths.unsqueeze(1))  # (N, 1, C)
        p_cols = past_k.shape[3]
        cols = torch.arange(p_cols + 1, device=tokens.device).unsqueeze(0)  # P cached columns + the new one
        past_ok = ((cols < past_lengths.unsqueeze(1)) | (cols == p_cols))[
            :, None, None, :
        ]  # (N, 1, 1, P + 1)
        src_ok = src_mask[:, None, None, :]
        new_k, new_v = [], []
        p = torch.zeros(())
        for i, block in enumerate(self.dec):
            x, k, v, p = block.step(x, past_k[i], past_v[i], past_ok, cross_k[i], cross_v[i], src_ok)
            new_k.append(k)
            new_v.append(v)
        logits = self.head(self.ln_f(x))[:, 0]
        return logits, torch.stack(new_k), torch.stack(new_v), p.mean(1)[:, 0]

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (N, S), tgt_in (N, T) -> logits (N, T, V)."""
        mem = self.memory(src)
        src_mask = (src != self.cfg.pad_id)[:, None, None, :]
        pos = torch.arange(tgt_in.shape[1], device=src.device)
        x = self.drop(self.tgt_emb(tgt_in) + self.tgt_pos(pos))
        for block in self.dec:
            x = block(x, mem, src_mask)
        return self.head(self.ln_f(x))

    def loss(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        logits = self(src, tgt_in)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=self.cfg.pad_id
        )


def example_input(cfg: TransformerSeq2SeqConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(src (2, 11) with one padded row, tgt_in (2, 5)) for the registry-wide tests."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, cfg.src_vocab, (2, 11), generator=g)
    src[1, 7:] = cfg.pad_id
    tgt = torch.randint(3, cfg.tgt_vocab, (2, 5), generator=g)
    tgt[:, 0] = cfg.bos_id
    return src, tgt


@register("transformer_seq2seq", TransformerSeq2SeqConfig)
def build_transformer_seq2seq(cfg: TransformerSeq2SeqConfig) -> nn.Module:
    return TransformerSeq2Seq(cfg)
