"""RNN encoder-decoder with additive attention (Bahdanau, Cho & Bengio 2015), character level.

Encoder: embedding -> bidirectional GRU -> ``memory`` (N, S, 2E), one vector per source character.
Decoder: a GRU cell whose input is the previous target token's embedding and the attention context;
before each step it scores every source position against its previous state,
``e_s = v . tanh(W_k m_s + W_q h_{t-1})``, softmaxes over the (unpadded) positions and takes the
weighted mean of ``memory`` as the context. The output layer reads ``[h_t; context; embedding]``.

The served graphs are ``encode`` (once per request) and ``step`` (one token for a batch of rows, each
with its own memory, padded to the longest source and masked):

* ``encode(src)``: src (N, S) int64 -> memory (N, S, 2E), keys (N, S, A) (``W_k m``, precomputed
  once so a step costs no pass over the memory with W_k), h0 (N, H).
* ``step(tokens, h, memory, keys, src_mask)``: tokens (N,) int64, h (N, H), src_mask (N, S) bool ->
  logits (N, V), h (N, H), attention (N, S).

Padding: ``encode`` packs the sequences by length when ``src`` holds PAD (training, batched evaluation),
so the backward direction starts at each row's last real character; an unpadded batch (one request) runs
the plain GRU, which is the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class Seq2SeqAttnConfig:
    src_vocab: int = 32  # 3 specials + 29 characters (training/data/numbers.py)
    tgt_vocab: int = 13  # 3 specials + 10 digits
    embed_dim: int = 64
    enc_hidden: int = 128  # per direction: memory vectors are 2 * enc_hidden wide
    hidden_size: int = 256  # decoder GRU
    attn_dim: int = 128
    dropout: float = 0.0
    max_target_len: int = 16  # decoding positions, EOS included
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        if (
            min(self.src_vocab, self.tgt_vocab) < 4
            or min(self.embed_dim, self.enc_hidden, self.hidden_size) < 1
        ):
            raise ValueError(f"invalid seq2seq config: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class Seq2SeqAttention(nn.Module):
    def __init__(self, cfg: Seq2SeqAttnConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mem = 2 * cfg.enc_hidden
        self.src_emb = nn.Embedding(
            cfg.src_vocab, cfg.embed_dim, padding_idx=cfg.pad_id
        )  # (N, S) -> (N, S, E)
        self.encoder = nn.GRU(cfg.embed_dim, cfg.enc_hidden, batch_first=True, bidirectional=True)
        self.init_h = nn.Linear(mem, cfg.hidden_size)  # final fwd/bwd states -> decoder h0
        self.key = nn.Linear(mem, cfg.attn_dim, bias=False)  # W_k
        self.query = nn.Linear(cfg.hidden_size, cfg.attn_dim)  # W_q
        self.energy = nn.Linear(cfg.attn_dim, 1, bias=False)  # v
        self.tgt_emb = nn.Embedding(cfg.tgt_vocab, cfg.embed_dim)  # (N,) -> (N, E)
        self.cell = nn.GRUCell(cfg.embed_dim + mem, cfg.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_size + mem + cfg.embed_dim, cfg.tgt_vocab)  # -> (N, V)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """src (N, S) int64 -> memory (N, S, 2E), keys (N, S, A), h0 (N, H)."""
        x = self.drop(self.src_emb(src))
        mask = src != self.cfg.pad_id
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or bool(mask.all()):
            memory, h_n = self.encoder(x)  # h_n (2, N, E): last forward and first backward states
        else:
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, h_n = self.encoder(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        h0 = torch.tanh(self.init_h(torch.cat([h_n[0], h_n[1]], dim=-1)))
        return memory, self.key(memory), h0

    def step(
        self,
        tokens: torch.Tensor,
        h: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        src_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (N,), h (N, H), memory (N, S, 2E), keys (N, S, A), src_mask (N, S) bool
        -> logits (N, V), h (N, H), attention (N, S)."""
        scores = self.energy(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(2)  # (N, S)
        attn = torch.softmax(scores.masked_fill(~src_mask, float("-inf")), dim=1)
        context = torch.bmm(attn.unsqueeze(1), memory).squeeze(1)  # (N, 2E)
        emb = self.drop(self.tgt_emb(tokens))  # (N, E)
        h = self.cell(torch.cat([emb, context], dim=1), h)
        logits = self.out(self.drop(torch.cat([h, context, emb], dim=1)))
        return logits, h, attn

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (N, S), tgt_in (N, T) (BOS + target) -> logits (N, T, V)."""
        memory, keys, h = self.encode(src)
        mask = src != self.cfg.pad_id
        outs = []
        for t in range(tgt_in.shape[1]):
            logits, h, _ = self.step(tgt_in[:, t], h, memory, keys, mask)
            outs.append(logits)
        return torch.stack(outs, dim=1)

    def loss(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
        logits = self(src, tgt_in)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=self.cfg.pad_id
        )


def example_input(cfg: Seq2SeqAttnConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(src (2, 11) with one padded row, tgt_in (2, 5)) for the registry-wide tests."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, cfg.src_vocab, (2, 11), generator=g)
    src[1, 7:] = cfg.pad_id
    tgt = torch.randint(3, cfg.tgt_vocab, (2, 5), generator=g)
    tgt[:, 0] = cfg.bos_id
    return src, tgt


@register("seq2seq_attn", Seq2SeqAttnConfig)
def build_seq2seq_attn(cfg: Seq2SeqAttnConfig) -> nn.Module:
    return Seq2SeqAttention(cfg)
