"""LeNet-5 (LeCun et al. 1998): conv-pool-conv-pool-fc-fc-fc, the seed lecture's first CNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class LeNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    dropout: float = 0.0


class LeNet5(nn.Module):
    def __init__(self, cfg: LeNetConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(cfg.in_channels, 6, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),  # (N, 6, H/2, W/2)
            nn.Conv2d(6, 16, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),  # (N, 16, H/4, W/4)
            nn.AdaptiveAvgPool2d(5),  # (N, 16, 5, 5) whatever the input size, as in the paper's C5 input
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Dropout(cfg.dropout),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, cfg.num_classes),  # (N, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("lenet5", LeNetConfig)
def build_lenet(cfg: LeNetConfig) -> nn.Module:
    return LeNet5(cfg)
