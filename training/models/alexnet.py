"""AlexNet (Krizhevsky et al. 2012), scaled to small inputs (64x64; any size through adaptive pooling).

Kept from the paper: a large-kernel strided first conv, three max-pools, a stack of 3x3 convs,
two dropout-regularised fully connected layers, ReLU everywhere. Changed for 64x64 images on a
CPU: 5x5 stride-1 first conv instead of 11x11 stride 4, widths divided by ~8 (``width``), batch
norm instead of local response normalisation (LRN is obsolete and ONNX-unfriendly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class AlexNetConfig:
    in_channels: int = 3
    num_classes: int = 10
    width: int = 32  # the paper's first layer has 96 filters; here 32, the rest scale with it
    hidden: int = 256  # the paper's FC layers have 4096 units
    dropout: float = 0.5


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class AlexNet(nn.Module):
    def __init__(self, cfg: AlexNetConfig) -> None:
        super().__init__()
        w = cfg.width
        self.features = nn.Sequential(
            *_conv(cfg.in_channels, w, 5),
            nn.MaxPool2d(3, 2, 1),  # (N, w, H/2, W/2)
            *_conv(w, 2 * w, 5),
            nn.MaxPool2d(3, 2, 1),  # (N, 2w, H/4, W/4)
            *_conv(2 * w, 3 * w, 3),
            *_conv(3 * w, 3 * w, 3),
            *_conv(3 * w, 2 * w, 3),
            nn.MaxPool2d(3, 2, 1),  # (N, 2w, H/8, W/8)
            nn.AdaptiveAvgPool2d(4),  # (N, 2w, 4, 4) whatever the input size (64 -> 8 -> 4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * w * 16, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.num_classes),  # (N, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("alexnet", AlexNetConfig)
def build_alexnet(cfg: AlexNetConfig) -> nn.Module:
    return AlexNet(cfg)


def example_input(cfg: AlexNetConfig) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, 64, 64)
