"""Xception (Chollet 2017), scaled to small inputs (64x64; any size through global pooling).

Kept from the paper: depthwise-separable convolutions (a 3x3 depthwise conv, then a 1x1
pointwise conv) everywhere after the stem; entry flow blocks that halve the resolution with a
strided max-pool and a strided 1x1 conv on the residual path; middle-flow blocks of three
separable convs with identity residuals; an exit flow of separable convs and global average
pooling. Scaled: stem of one stride-1 conv, ``widths`` instead of 128/256/728, ``middle_blocks``
instead of 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class XceptionConfig:
    in_channels: int = 3
    num_classes: int = 10
    stem: int = 32
    widths: tuple[int, ...] = (64, 128, 192)  # entry-flow blocks; each halves H and W
    middle_blocks: int = 2
    exit_width: int = 256
    dropout: float = 0.2


class SeparableConv(nn.Sequential):
    """(N, a, H, W) -> (N, b, H, W): depthwise 3x3 then pointwise 1x1, batch norm after."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(nn.Conv2d(a, a, 3, padding=1, groups=a, bias=False), nn.Conv2d(a, b, 1, bias=False))
        self.append(nn.BatchNorm2d(b))


class EntryBlock(nn.Module):
    """(N, a, H, W) -> (N, b, H/2, W/2): two separable convs + max-pool, strided 1x1 on the shortcut."""

    def __init__(self, a: int, b: int, first_relu: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU() if first_relu else nn.Identity(),
            SeparableConv(a, b),
            nn.ReLU(),
            SeparableConv(b, b),
            nn.MaxPool2d(3, 2, 1),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(a, b, 1, stride=2, bias=False), nn.BatchNorm2d(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class MiddleBlock(nn.Module):
    """(N, c, H, W) -> same: three ReLU-separable convs with an identity residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(3) for m in (nn.ReLU(), SeparableConv(c, c))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Xception(nn.Module):
    def __init__(self, cfg: XceptionConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.stem),
            nn.ReLU(inplace=True),
        )  # (N, stem, H, W)
        chans = [cfg.stem, *cfg.widths]
        self.entry = nn.Sequential(
            *[
                EntryBlock(a, b, first_relu=i > 0)
                for i, (a, b) in enumerate(zip(chans, chans[1:], strict=False))
            ]
        )  # (N, widths[-1], H / 2**len(widths), ...)
        self.middle = nn.Sequential(*[MiddleBlock(chans[-1]) for _ in range(cfg.middle_blocks)])
        self.exit = nn.Sequential(
            nn.ReLU(),
            SeparableConv(chans[-1], cfg.exit_width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.exit_width, cfg.num_classes),
        )  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit(self.middle(self.entry(self.stem(x))))


@register("xception", XceptionConfig)
def build_xception(cfg: XceptionConfig) -> nn.Module:
    return Xception(cfg)


def example_input(cfg: XceptionConfig) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, 64, 64)
