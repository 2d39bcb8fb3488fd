"""Seeded latent vectors for the GAN sampler, shared by the gateway and the training/quality side.

Kept free of torch (the gateway imports it). numpy's PCG64 draws row by row, so the first k rows
of ``latents(seed, n, d)`` equal ``latents(seed, k, d)``: asking for fewer images with the same
seed returns a prefix of the same images.
"""

from __future__ import annotations

import numpy as np


def latents(seed: int, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 standard-normal latents, a pure function of (seed, n, dim)."""
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
