"""DCGAN (Radford et al. 2016): a generator from noise and its discriminator, scaled to small images.

The paper's rules, kept: no pooling (strided convolutions down, transposed convolutions up),
batch norm in both nets except the generator's output and the discriminator's input layer, ReLU
in the generator with a tanh output, LeakyReLU(0.2) in the discriminator. Scaled down from 64x64
to ``image_size`` = 4 * 2**k (32 for the digits): the latent vector becomes a 4x4 map, each
generator stage doubles H and W and halves the width, mirrored by the discriminator.

Generator output is in [-1, 1] (the recipe maps pixels x/255 -> 2x - 1); the discriminator
returns one logit per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


def _stages(image_size: int) -> int:
    k = (image_size // 4).bit_length() - 1
    if image_size < 8 or 4 * 2**k != image_size:
        raise ValueError(f"image_size must be 4 * 2**k >= 8, got {image_size}")
    return k


@dataclass
class DCGANGeneratorConfig:
    latent_dim: int = 64
    channels: int = 1
    image_size: int = 32
    width: int = 32  # channels of the last stage; each stage below it doubles them


@dataclass
class DCGANDiscriminatorConfig:
    channels: int = 1
    image_size: int = 32
    width: int = 32  # channels of the first stage; each stage after it doubles them


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: DCGANGeneratorConfig) -> None:
        super().__init__()
        k = _stages(cfg.image_size)
        widths = [cfg.width * 2 ** (k - 1 - i) for i in range(k)]  # e.g. 32x32: (128, 64, 32) at 4, 8, 16
        # (N, Z) -> (N, Z, 1, 1) -> (N, w0, 4, 4): a 4x4 transposed conv on a 1x1 map, as the paper's project
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for a, b in zip(widths, widths[1:], strict=False):  # (N, a, s, s) -> (N, b, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
            ]
        layers += [
            nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1),
            nn.Tanh(),
        ]  # (N, C, S, S) in [-1, 1]
        self.net = nn.Sequential(*layers)
        self.latent_dim = cfg.latent_dim
        _init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (N, Z) -> (N, C, S, S)


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCGANDiscriminatorConfig) -> None:
        super().__init__()
        k = _stages(cfg.image_size)
        widths = [cfg.width * 2**i for i in range(k)]  # e.g. 32x32: (32, 64, 128) at 16, 8, 4
        layers: list[nn.Module] = [  # no batch norm on the input layer (the paper: it destabilises)
            nn.Conv2d(cfg.channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # (N, C, S, S) -> (N, w0, S/2, S/2)
        for a, b in zip(widths, widths[1:], strict=False):  # (N, a, s, s) -> (N, b, s/2, s/2)
            layers += [
                nn.Conv2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0)]  # (N, w, 4, 4) -> (N, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (N,) logits: real > 0


def _init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), batch-norm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register("dcgan_generator", DCGANGeneratorConfig)
def build_generator(cfg: DCGANGeneratorConfig) -> nn.Module:
    return DCGANGenerator(cfg)


@register("dcgan_discriminator", DCGANDiscriminatorConfig)
def build_discriminator(cfg: DCGANDiscriminatorConfig) -> nn.Module:
    return DCGANDiscriminator(cfg)


def example_input(cfg: DCGANGeneratorConfig | DCGANDiscriminatorConfig) -> torch.Tensor:
    """A batch each net accepts (registry-wide tests): latents for the generator, images for the critic."""
    if isinstance(cfg, DCGANGeneratorConfig):
        return torch.randn(3, cfg.latent_dim)
    return torch.rand(3, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
