"""U-Net (Ronneberger et al. 2015) for semantic segmentation: per-pixel class logits.

An encoder halves H and W ``depth`` times while widening, a decoder doubles them back with
transposed convolutions, and skip connections concatenate each encoder stage's features into
the decoder stage of the same resolution, so fine boundaries survive the bottleneck. It is
fully convolutional: any H, W that are multiples of ``2**depth`` (``config.multiple_of``) work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class UNetConfig:
    in_channels: int = 3
    num_classes: int = 4
    base_width: int = 16  # channels at full resolution; stage i has base_width * 2**i
    depth: int = 3  # number of 2x downsamplings
    dropout: float = 0.0  # spatial dropout at the bottleneck

    @property
    def multiple_of(self) -> int:
        """H and W must be multiples of this so every pooling halves evenly and the skips line up."""
        return 2**self.depth


class DoubleConv(nn.Module):
    """(conv3x3 - BN - ReLU) x 2, keeping H and W."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """Transposed conv doubles H, W; concatenate the encoder skip; DoubleConv fuses them."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)  # (N, c_in, h, w) -> (N, c_out, 2h, 2w)
        self.fuse = DoubleConv(c_out + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        widths = [cfg.base_width * 2**i for i in range(cfg.depth + 1)]
        self.multiple_of = cfg.multiple_of
        self.stem = DoubleConv(cfg.in_channels, widths[0])  # (N, w0, H, W)
        # down[i]: (N, w_i, H/2^i, W/2^i) -> (N, w_{i+1}, H/2^{i+1}, W/2^{i+1})
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(cfg.depth)
        )
        self.dropout = nn.Dropout2d(cfg.dropout)
        # up[j] undoes down[depth-1-j]: back to (N, w_i, H/2^i, W/2^i)
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], cfg.num_classes, 1)  # (N, num_classes, H, W) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.dropout(skips.pop())  # bottleneck (N, w_depth, H/2^depth, W/2^depth)
        for up in self.up:
            y = up(y, skips.pop())
        return self.head(y)


@register("unet", UNetConfig)
def build_unet(cfg: UNetConfig) -> nn.Module:
    return UNet(cfg)


def example_input(cfg: UNetConfig) -> torch.Tensor:
    """A batch the model accepts (used by the registry-wide tests): non-square on purpose."""
    m = cfg.multiple_of
    return torch.randn(2, cfg.in_channels, 2 * m, 3 * m)
