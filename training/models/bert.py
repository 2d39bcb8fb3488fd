"""BERT-style encoder (Devlin et al. 2019) for character-level text: pre-trained with masked-language
modelling, then fine-tuned for sequence classification on the ``[CLS]`` position.

Token + learned positional embeddings (position 0 holds ``[CLS]``), an embedding LayerNorm, ``n_layer``
bidirectional self-attention blocks (post-LN as in BERT, or pre-LN with a final LayerNorm, which trains
more stably at higher learning rates), then two heads:

* ``mlm_logits``: dense -> GELU -> LayerNorm -> a decoder whose weight is the token embedding (tied, as
  in BERT) plus a bias: ``(N, T, C) -> (N, T, V)``.
* ``classify``: BERT's pooler (dense + tanh on the ``[CLS]`` vector) -> dropout -> linear to
  ``num_labels``; ``embed`` is the same pooled vector L2-normalised (what ``/v1/embeddings`` serves).

Padding is masked out of attention with ``attention_mask`` (``(N, T)``, 1 for real tokens), so a padded
row scores exactly as the unpadded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class BertConfig:
    vocab_size: int = 68  # corpus characters + [PAD], [CLS], [MASK]
    max_len: int = 128  # learned positions, [CLS] included
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.1
    num_labels: int = 3
    pad_id: int = 0
    pre_ln: bool = True  # False: BERT's post-LN blocks
    # "cls": the pooler reads the [CLS] position (BERT); "mean": the mean over the tokens, which MLM
    # trains directly (without BERT's next-sentence task nothing trains [CLS] before fine-tuning)
    pool: str = "cls"

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if min(self.vocab_size - 1, self.max_len - 1, self.n_layer, self.n_head, self.num_labels) < 1:
            raise ValueError(f"invalid BERT config: {self}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id {self.pad_id} outside the vocabulary")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be cls or mean, got {self.pool!r}")


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.d_model = cfg.n_head, cfg.d_model // cfg.n_head, cfg.d_model
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.p_drop = cfg.dropout
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        """x (N, T, C), key_ok (N, 1, 1, T) bool -> (N, T, C)."""
        n, t, c = x.shape
        q, k, v = (  # each (N, H, T, D); split by the config's width (a constant in the ONNX graph)
            z.view(n, t, self.n_head, self.head_dim).transpose(1, 2)
            for z in self.qkv(x).split(self.d_model, dim=2)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_ok, dropout_p=self.p_drop if self.training else 0.0
        )
        return self.drop(self.proj(y.transpose(1, 2).reshape(n, t, c)))


class Block(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.pre_ln
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attn(self.ln1(x), key_ok)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x, key_ok))
        return self.ln2(x + self.mlp(x))


class Bert(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)  # (N, T) -> (N, T, C)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.emb_ln = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.pre_ln else nn.Identity()
        # MLM head: transform, then the tied decoder (weight = tok_emb.weight) + its own bias
        self.mlm_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlm_ln = nn.LayerNorm(cfg.d_model)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        # classification head on [CLS]: BERT's pooler, then a linear layer
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model)
        self.cls_drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, cfg.num_labels)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def encode(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, T) int64 ([CLS] first), attention_mask (N, T) (1 = token) -> hidden (N, T, C)."""
        if attention_mask is None:
            attention_mask = tokens != self.cfg.pad_id
        key_ok = attention_mask.bool()[:, None, None, :]  # (N, 1, 1, T)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.emb_ln(self.tok_emb(tokens) + self.pos_emb(pos)))
        for block in self.blocks:
            x = block(x, key_ok)
        return self.ln_f(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (N, T, C) (or (M, C): the masked positions only) -> logits (..., V)."""
        h = self.mlm_ln(F.gelu(self.mlm_dense(hidden)))
        return h @ self.tok_emb.weight.t() + self.mlm_bias

    def pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (N, T, C), attention_mask (N, T) -> pooled (N, C): [CLS], or the mean over the tokens."""
        if self.cfg.pool == "mean" and attention_mask is not None:
            w = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
            return torch.tanh(self.pooler((hidden * w).sum(1) / w.sum(1).clamp(min=1.0)))
        return torch.tanh(self.pooler(hidden[:, 0]))

    def classify(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (N, T), attention_mask (N, T) -> class logits (N, num_labels)."""
        if attention_mask is None:
            attention_mask = (tokens != self.cfg.pad_id).long()
        pooled = self.pooled(self.encode(tokens, attention_mask), attention_mask)
        return self.classifier(self.cls_drop(pooled))

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (N, T), attention_mask (N, T) -> class logits (N, L), MLM logits (N, T, V),
        L2-normalised embedding (N, C). Export serves ``served`` instead."""
        if attention_mask is None:
            attention_mask = (tokens != self.cfg.pad_id).long()
        hidden = self.encode(tokens, attention_mask)
        pooled = self.pooled(hidden, attention_mask)
        return self.classifier(pooled), self.mlm_logits(hidden), F.normalize(pooled, dim=-1, eps=1e-12)

    def served(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the ONNX graph computes: class probabilities (N, L) and the embedding (N, C)."""
        hidden = self.encode(tokens, attention_mask)
        pooled = self.pooled(hidden, attention_mask)
        probs = torch.softmax(self.classifier(pooled), dim=-1)
        return probs, F.normalize(pooled, dim=-1, eps=1e-12)

    def mlm_loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """tokens (N, T) corrupted input, targets (N, T): original ids where masked, -100 elsewhere."""
        hidden = self.encode(tokens)
        picked = targets != -100
        logits = self.mlm_logits(hidden[picked])  # (M, V): score only the masked positions (cheaper)
        return F.cross_entropy(logits, targets[picked])


@register("bert", BertConfig)
def build_bert(cfg: BertConfig) -> nn.Module:
    return Bert(cfg)


def example_input(cfg: BertConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the second padded: tokens (2, T) and attention_mask (2, T)."""
    t = min(12, cfg.max_len)
    tokens = torch.randint(1, cfg.vocab_size, (2, t), dtype=torch.int64)
    mask = torch.ones(2, t, dtype=torch.int64)
    tokens[1, t // 2 :] = cfg.pad_id
    mask[1, t // 2 :] = 0
    return tokens, mask
