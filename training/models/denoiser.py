"""Fully convolutional denoising autoencoder (Vincent et al. 2008, convolutional and residual).

The encoder squeezes the noisy image with strided 3x3 convs (each stage halves H and W), the
decoder rebuilds it with nearest upsampling + 3x3 convs, and a skip connection per stage adds
the encoder's features back (the bottleneck alone forgets edges). The network predicts the
*noise*, subtracted from the input (residual learning, as DnCNN): a clean region costs the
network nothing to pass through.

Fully convolutional, so any H x W works: stride-2 convs with padding 1 give ceil(h/2), the
decoder crops each upsampled map back to its skip's size, so no padding to a multiple is needed
and the ONNX graph keeps H and W dynamic. Inputs and outputs are in [0, 1] (x/255).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class DenoiserConfig:
    in_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 96)  # stage i works at 1/2**i resolution
    convs_per_stage: int = 2


def _block(c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DenoisingAutoencoder(nn.Module):
    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        w, n = cfg.widths, cfg.convs_per_stage
        self.head = _block(cfg.in_channels, w[0], n)  # (N, C, H, W) -> (N, w0, H, W)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU(inplace=True), _block(b, b, n - 1))
            for a, b in zip(w, w[1:], strict=False)
        )  # (N, w_i, h, w) -> (N, w_i+1, ceil(h/2), ceil(w/2))
        self.up = nn.ModuleList(
            nn.Conv2d(b, a, 3, padding=1) for a, b in zip(w, w[1:], strict=False)
        )  # after 2x upsampling: (N, w_i+1, 2h, 2w) -> (N, w_i, 2h, 2w), cropped to the skip
        self.fuse = nn.ModuleList(_block(a, a, n) for a in w[:-1])
        self.tail = nn.Conv2d(w[0], cfg.in_channels, 3, padding=1)  # (N, w0, H, W) -> noise (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        skips = [h]
        for down in self.down:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up, fuse in zip(reversed(self.up), reversed(self.fuse), strict=True):
            skip = skips.pop()
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = up(h)[:, :, : skip.shape[2], : skip.shape[3]]  # ceil halving: crop the extra row/column
            h = fuse(torch.relu(h + skip))
        return (x - self.tail(h)).clamp(0.0, 1.0)


@register("denoiser", DenoiserConfig)
def build_denoiser(cfg: DenoiserConfig) -> nn.Module:
    return DenoisingAutoencoder(cfg)


def receptive_radius(cfg: DenoiserConfig | dict) -> int:
    """Input pixels on each side that influence an output pixel: the tile margin the gateway needs."""
    widths = cfg["widths"] if isinstance(cfg, dict) else cfg.widths
    n = cfg["convs_per_stage"] if isinstance(cfg, dict) else cfg.convs_per_stage
    r, step = n, 1  # head convs at full resolution
    for _ in widths[1:]:  # per stage down: n convs at the stage's stride; up + fuse on the way back
        step *= 2
        r += n * step + step // 2 + n * (step // 2)
    return r + 1  # the tail conv


def example_input(cfg: DenoiserConfig) -> torch.Tensor:
    """A batch the model accepts (registry-wide tests); odd sizes exercise the crop."""
    return torch.rand(2, cfg.in_channels, 21, 30)
