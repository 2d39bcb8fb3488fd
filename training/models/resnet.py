"""ResNet-style CNN for image classification (He et al. 2015), small enough for CPU training.

Built from the seed lecture's layers: convolution, batch normalisation, ReLU, pooling,
dropout and a fully connected classifier, with identity shortcuts around pairs of convs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class ResNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)  # channels per stage; each stage after the first halves H and W
    blocks_per_stage: int = 1
    dropout: float = 0.2


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut, then relu. Strided when the stage downsamples."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:  # 1x1 projection when the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(  # (N, C, H, W) -> (N, w0, H, W)
            nn.Conv2d(cfg.in_channels, w0, 3, padding=1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        c_in = w0
        for i, width in enumerate(cfg.widths):
            for j in range(cfg.blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1  # (N, w, H/2^i, W/2^i) after stage i
                stages.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, C_last, 1, 1): any input size works
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.num_classes)  # (N, num_classes) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


@register("resnet", ResNetConfig)
def build_resnet(cfg: ResNetConfig) -> nn.Module:
    return ResNet(cfg)
