"""VGG-style net (Simonyan & Zisserman 2014): stacks of 3x3 conv + BN + ReLU, then max-pool."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class VGGConfig:
    in_channels: int = 1
    num_classes: int = 10
    stages: tuple[int, ...] = (16, 32, 64)  # channels; each stage: 2 convs then 2x2 max-pool
    dropout: float = 0.3


class VGG(nn.Module):
    def __init__(self, cfg: VGGConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for width in cfg.stages:  # (N, c_in, H, W) -> (N, width, H/2, W/2)
            for _ in range(2):
                layers += [
                    nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(c_in, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(128, cfg.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("vgg", VGGConfig)
def build_vgg(cfg: VGGConfig) -> nn.Module:
    return VGG(cfg)
