"""SRGAN (Ledig et al. 2017): the SRResNet generator and its discriminator.

Generator: a 9x9 head conv, residual blocks, a long skip around them, then ``log2(scale)``
sub-pixel upsampling steps (conv to 4x channels + PixelShuffle(2)) and a tail conv back to
image channels. Trained with a pixel loss it is "SRResNet" (PSNR-oriented); fine-tuned with the
discriminator's adversarial loss it is "SRGAN" (sharper, lower PSNR). Both are the same module.

Two deliberate changes from the paper, for small CPU budgets:
* ``bicubic_skip``: the network predicts a residual on top of a bicubic upscale of its input,
  so it starts as (almost) bicubic and only has to learn the missing detail.
* ``batch_norm=False`` by default (as in EDSR, Lim et al. 2017): BN in SR generators costs
  quality and makes eval differ from training; the discriminator keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models import register


@dataclass
class SRResNetConfig:
    channels: int = 3
    scale: int = 4  # 2 or 4 (any power of two works)
    width: int = 64
    num_blocks: int = 16
    head_kernel: int = 9  # the paper's 9x9 head/tail; 3 is much cheaper on a CPU
    batch_norm: bool = False
    bicubic_skip: bool = True


class ResidualBlock(nn.Module):
    """conv-(BN)-PReLU-conv-(BN) + identity, keeping shape (N, C, h, w)."""

    def __init__(self, width: int, batch_norm: bool) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm2d(width) if batch_norm else nn.Identity()

        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm),
            norm(),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm),
            norm(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    def __init__(self, cfg: SRResNetConfig) -> None:
        super().__init__()
        steps = int(round(math.log2(cfg.scale)))
        if 2**steps != cfg.scale or steps < 1:
            raise ValueError(f"scale must be a power of two >= 2, got {cfg.scale}")
        self.scale = cfg.scale
        self.bicubic_skip = cfg.bicubic_skip
        k, w = cfg.head_kernel, cfg.width
        self.head = nn.Sequential(nn.Conv2d(cfg.channels, w, k, padding=k // 2), nn.PReLU(w))  # (N, w, h, w)
        self.blocks = nn.Sequential(*(ResidualBlock(w, cfg.batch_norm) for _ in range(cfg.num_blocks)))
        self.body_end = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1, bias=not cfg.batch_norm),
            nn.BatchNorm2d(w) if cfg.batch_norm else nn.Identity(),
        )
        # each step: (N, w, h, w') -> (N, 4w, h, w') -> PixelShuffle -> (N, w, 2h, 2w')
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(w, 4 * w, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(w))
                for _ in range(steps)
            )
        )
        self.tail = nn.Conv2d(w, cfg.channels, k, padding=k // 2)  # (N, C, s*h, s*w)
        if cfg.bicubic_skip:
            # Small (not zero: gradients must reach every layer from step one) so the untrained
            # network is bicubic plus a little noise rather than noise.
            with torch.no_grad():
                self.tail.weight.mul_(0.1)
                self.tail.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        y = self.tail(self.upsample(feat + self.body_end(self.blocks(feat))))
        if self.bicubic_skip:
            y = y + F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)
        return y


@dataclass
class SRGANDiscriminatorConfig:
    channels: int = 3
    widths: tuple[int, ...] = (64, 128, 256, 512)  # each stage halves H and W once
    hidden: int = 1024
    batch_norm: bool = True


class SRGANDiscriminator(nn.Module):
    """HR image (N, C, H, W) -> (N,) real/fake logits. Global pooling makes it size-agnostic."""

    def __init__(self, cfg: SRGANDiscriminatorConfig) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int, bn: bool) -> nn.Module:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not bn)]
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return nn.Sequential(*layers)

        stages: list[nn.Module] = []
        c_in = cfg.channels
        for i, w in enumerate(cfg.widths):
            # stage i: (N, c_in, H/2^i, W/2^i) -> (N, w, H/2^(i+1), W/2^(i+1)); no BN on the very first conv
            stages.append(
                nn.Sequential(block(c_in, w, 1, cfg.batch_norm and i > 0), block(w, w, 2, cfg.batch_norm))
            )
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, w_last)
            nn.Linear(c_in, cfg.hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(cfg.hidden, 1),
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's activations: the VGG-free perceptual proxy (feature matching) uses them."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)[-1]).squeeze(1)


@register("srresnet", SRResNetConfig)
def build_srresnet(cfg: SRResNetConfig) -> nn.Module:
    return SRResNet(cfg)


@register("srgan_discriminator", SRGANDiscriminatorConfig)
def build_srgan_discriminator(cfg: SRGANDiscriminatorConfig) -> nn.Module:
    return SRGANDiscriminator(cfg)


def example_input(cfg: SRResNetConfig | SRGANDiscriminatorConfig) -> torch.Tensor:
    """A batch either model accepts (registry-wide tests): LR patches or HR patches, non-square."""
    return torch.randn(2, cfg.channels, 6, 10)
