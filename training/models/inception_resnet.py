"""Inception-ResNet (Szegedy et al. 2017), scaled to small inputs (64x64; any size).

Kept from the paper: inception-style blocks whose concatenated branches are projected back to
the block's width by a linear 1x1 conv and added to the input (a residual connection), with the
residual scaled down (``residual_scale``, the paper's 0.1-0.3) to keep training stable;
reduction blocks between stages (strided 3x3 conv, strided conv tower and max-pool in parallel).
Scaled: a one-conv stem, ``widths`` per stage instead of 256/896/1792, ``blocks_per_stage``
instead of 5/10/5, one block type (the 35x35 Inception-ResNet-A layout) at every stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register
from training.models.inception import conv_bn


@dataclass
class InceptionResNetConfig:
    in_channels: int = 3
    num_classes: int = 10
    stem: int = 32
    widths: tuple[int, ...] = (64, 128, 192)  # stage widths; a reduction block between stages
    blocks_per_stage: tuple[int, ...] = (1, 2, 1)
    residual_scale: float = 0.2
    dropout: float = 0.2


class InceptionResidualBlock(nn.Module):
    """(N, c, H, W) -> same: relu(x + scale * W1x1[b1 | b3 | b33]), branches of width c/4."""

    def __init__(self, c: int, scale: float) -> None:
        super().__init__()
        b = max(c // 4, 8)
        self.branches = nn.ModuleList(
            [
                conv_bn(c, b, 1),
                nn.Sequential(conv_bn(c, b, 1), conv_bn(b, b, 3)),
                nn.Sequential(conv_bn(c, b, 1), conv_bn(b, b, 3), conv_bn(b, b, 3)),
            ]
        )
        self.project = nn.Conv2d(3 * b, c, 1)  # linear: no activation before the sum, as in the paper
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.scale * self.project(torch.cat([br(x) for br in self.branches], 1)))


class Reduction(nn.Module):
    """(N, a, H, W) -> (N, b, H/2, W/2): max-pool | strided 3x3 | 1x1 -> 3x3 -> strided 3x3, concatenated."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        k = (b - a) // 2
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(a, k, 3, 2, 1, bias=False), nn.BatchNorm2d(k), nn.ReLU(inplace=True)
        )
        self.tower = nn.Sequential(
            conv_bn(a, k, 1),
            conv_bn(k, k, 3),
            nn.Conv2d(k, b - a - k, 3, 2, 1, bias=False),
            nn.BatchNorm2d(b - a - k),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pool(x), self.conv(x), self.tower(x)], 1)


class InceptionResNet(nn.Module):
    def __init__(self, cfg: InceptionResNetConfig) -> None:
        super().__init__()
        w = cfg.widths
        layers: list[nn.Module] = [conv_bn(cfg.in_channels, cfg.stem, 3), Reduction(cfg.stem, w[0])]
        for i, n in enumerate(cfg.blocks_per_stage):  # (N, w_i, H / 2**(i+1), W / 2**(i+1))
            layers += [InceptionResidualBlock(w[i], cfg.residual_scale) for _ in range(n)]
            if i + 1 < len(w):
                layers.append(Reduction(w[i], w[i + 1]))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(w[-1], cfg.num_classes)
        )  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("inception_resnet", InceptionResNetConfig)
def build_inception_resnet(cfg: InceptionResNetConfig) -> nn.Module:
    if len(cfg.widths) != len(cfg.blocks_per_stage):
        raise ValueError("widths and blocks_per_stage need one entry per stage")
    return InceptionResNet(cfg)


def example_input(cfg: InceptionResNetConfig) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, 64, 64)
