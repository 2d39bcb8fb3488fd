"""Character-level LSTM language model (Graves 2013; Karpathy's char-rnn), with a step API.

``forward`` scores a whole sequence from a zero state (training, evaluation). ``step`` carries
the recurrent state explicitly, ``(tokens, h, c) -> (logits, h, c)``: this is the graph export
writes to ONNX, so the server feeds a prompt once (T > 1) and then one token per step (T = 1)
without ever re-reading the prefix. State tensors use PyTorch's ``nn.LSTM`` layout,
``(num_layers, N, hidden_size)``: batch on axis 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class LSTMLMConfig:
    vocab_size: int = 65
    embed_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1  # between LSTM layers and before the output layer
    context_length: int = 128  # training sequence length; the recurrence itself has no limit

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.embed_dim < 1 or self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"invalid LSTM LM config: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class LSTMLanguageModel(nn.Module):
    def __init__(self, cfg: LSTMLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)  # (N, T) -> (N, T, E)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )  # (N, T, E) -> (N, T, H)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)  # (N, T, H) -> (N, T, V)

    def init_state(self, batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c), each (num_layers, N, hidden_size)."""
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def step(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (N, T) int64, h/c (L, N, H) -> logits (N, T, V), h/c after the last token."""
        out, (h, c) = self.lstm(self.embed(tokens), (h, c))
        return self.head(self.drop(out)), h, c

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, T) int64 -> logits (N, T, V), starting from a zero state."""
        h, c = self.init_state(tokens.shape[0], tokens.device)
        return self.step(tokens, h, c)[0]


@register("lstm_lm", LSTMLMConfig)
def build_lstm_lm(cfg: LSTMLMConfig) -> nn.Module:
    return LSTMLanguageModel(cfg)
