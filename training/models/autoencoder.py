"""Convolutional (denoising / variational) autoencoder for anomaly detection.

Strided convs squeeze a (C, S, S) image to a small dense code, transposed convs rebuild it.
Trained only on normal images, it reconstructs those well and anything else badly, so the
reconstruction error is an anomaly score. The dense bottleneck is deliberate: a purely
convolutional code of the same size learns something close to the identity and reconstructs
anomalies too. With ``variational=True`` the code is a Gaussian (Kingma & Welling 2014): the
encoder predicts a mean and log-variance, training samples from it (reparameterisation) and
adds a KL term; evaluation uses the mean, so inference is deterministic.

Inputs are in [0, 1] (x/255); outputs pass a sigmoid, so reconstructions are in [0, 1] too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from training.models import register


@dataclass
class AutoencoderConfig:
    in_channels: int = 1
    image_size: int = 32  # S; must be a multiple of 2**len(widths) (the dense code fixes the size)
    widths: tuple[int, ...] = (32, 64, 128)  # each stage halves H and W
    latent_dim: int = 32
    variational: bool = False


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        n = len(cfg.widths)
        if cfg.image_size % 2**n:
            raise ValueError(f"image_size {cfg.image_size} must be a multiple of 2**{n}")
        self.variational = cfg.variational
        self.image_size = cfg.image_size
        s = cfg.image_size // 2**n
        c_last = cfg.widths[-1]
        self.code_shape = (c_last, s, s)

        enc: list[nn.Module] = []
        c_in = cfg.in_channels
        for w in cfg.widths:  # (N, c_in, h, h) -> (N, w, h/2, h/2)
            enc += [
                nn.Conv2d(c_in, w, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.LeakyReLU(0.2),
            ]
            c_in = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())  # (N, c_last * s * s)
        code_out = 2 * cfg.latent_dim if cfg.variational else cfg.latent_dim
        self.to_code = nn.Linear(
            c_last * s * s, code_out
        )  # (N, latent) or (N, 2 * latent): mean | log-variance
        self.from_code = nn.Linear(cfg.latent_dim, c_last * s * s)

        dec: list[nn.Module] = []
        for w_in, w_out in zip(reversed(cfg.widths), list(reversed(cfg.widths))[1:], strict=False):
            dec += [
                nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(),
            ]  # (N, w_in, h, h) -> (N, w_out, 2h, 2h)
        dec.append(nn.ConvTranspose2d(cfg.widths[0], cfg.in_channels, 4, stride=2, padding=1))  # (N, C, S, S)
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C, S, S) -> mean (N, latent) and log-variance (N, latent) or None."""
        code = self.to_code(self.encoder(x))
        if self.variational:
            mu, logvar = code.chunk(2, dim=1)
            return mu, logvar.clamp(-10.0, 10.0)  # clamped: exp() must not overflow early in training
        return code, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, C, S, S) in [0, 1]."""
        h = torch.relu(self.from_code(z)).view(-1, *self.code_shape)
        return torch.sigmoid(self.decoder(h))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Reconstruction plus (mean, log-variance) for the KL term; samples the code when variational."""
        mu, logvar = self.encode(x)
        z = mu
        if logvar is not None and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x)[0]


@register("autoencoder", AutoencoderConfig)
def build_autoencoder(cfg: AutoencoderConfig) -> nn.Module:
    return Autoencoder(cfg)


def example_input(cfg: AutoencoderConfig) -> torch.Tensor:
    """A batch the model accepts (registry-wide tests): images in [0, 1] of the configured size."""
    return torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size)
