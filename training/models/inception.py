"""GoogLeNet-style Inception network (Szegedy et al. 2015), scaled to small inputs (64x64; any size).

Kept from the paper: inception modules of four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5,
here as two 3x3 as in Inception v2; 3x3 max-pool -> 1x1) concatenated on channels, 1x1
reductions before the expensive convs, max-pools between module groups, global average pooling
and dropout before the classifier. Scaled: a one-conv stem, ``base`` sets the branch widths
(the paper's first module has 64/128/32/32 outputs), ``modules_per_stage`` instead of 2/5/2,
no auxiliary classifiers (they help a 22-layer net's gradients, not this one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class InceptionConfig:
    in_channels: int = 3
    num_classes: int = 10
    stem: int = 32
    base: int = 16  # branch widths of stage i: base * 2**i * (2, 4, 1, 1) for 1x1, 3x3, 5x5, pool
    modules_per_stage: tuple[int, ...] = (1, 2, 1)  # a 2x2 max-pool between stages
    dropout: float = 0.3


def conv_bn(a: int, b: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(a, b, k, padding=k // 2, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)
    )


class InceptionModule(nn.Module):
    """(N, c, H, W) -> (N, b1 + b3 + b5 + bp, H, W): four branches, concatenated."""

    def __init__(self, c: int, b1: int, b3: int, b5: int, bp: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                conv_bn(c, b1, 1),
                nn.Sequential(conv_bn(c, b3 // 2, 1), conv_bn(b3 // 2, b3, 3)),
                nn.Sequential(conv_bn(c, b5 // 2, 1), conv_bn(b5 // 2, b5, 3), conv_bn(b5, b5, 3)),
                nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(c, bp, 1)),
            ]
        )
        self.out_channels = b1 + b3 + b5 + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class Inception(nn.Module):
    def __init__(self, cfg: InceptionConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            conv_bn(cfg.in_channels, cfg.stem, 3),
            nn.MaxPool2d(2),
        ]  # (N, stem, H/2, W/2)
        c = cfg.stem
        for i, n in enumerate(cfg.modules_per_stage):
            w = cfg.base * 2**i
            for _ in range(n):
                m = InceptionModule(c, 2 * w, 4 * w, w, w)
                layers.append(m)
                c = m.out_channels  # 8w
            if i < len(cfg.modules_per_stage) - 1:
                layers.append(nn.MaxPool2d(2))  # halves H and W between stages
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c, cfg.num_classes)
        )  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register("inception", InceptionConfig)
def build_inception(cfg: InceptionConfig) -> nn.Module:
    return Inception(cfg)


def example_input(cfg: InceptionConfig) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, 64, 64)
