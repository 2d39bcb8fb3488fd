"""Anomaly-detection data: scikit-learn's digits are "normal"; shapes, noise and textures are not.

Normal images are the digits splits of ``training.data.digits`` (train for fitting, val for the
threshold, test for the report). Anomalies are generated as 8x8 "scans" and pass through the
very same ``digits.prepare`` (canonicalisation and resize) as the digits, so a detector cannot
key on resolution or resampling artefacts alone:

* ``shapes``  - circles, squares, triangles (filled or outlined) in ink on white paper; rings
  look much like a "0", which is the point: some anomalies should be hard;
* ``noise``   - uniform, salt-and-pepper or blotchy ink noise;
* ``textures`` - crops of scikit-image's brick / grass / gravel photos.

The test anomaly set is fixed (``ANOMALY_SEED``), independent of ``--seed``; a second set
(``ANOMALY_SEED + 1``) only draws the validation curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.bundled import load_bundled_image
from training.data.digits import load_digits_splits, prepare, to_pil
from training.data.shapes import SHAPE_KINDS, shape_mask

ANOMALY_KINDS = ("shapes", "noise", "textures")
ANOMALY_SEED = 1234
RAW_SIZE = 8  # the digits' native resolution
_TEXTURES = ("skimage:brick", "skimage:grass", "skimage:gravel")


def _ink_to_paper(ink: np.ndarray) -> np.ndarray:
    """Ink coverage in [0, 1] -> uint8 paper image (dark ink on white), as digits.raw_digit_images does."""
    return np.clip(np.round(255.0 * (1.0 - ink)), 0, 255).astype(np.uint8)


def _raw_shape(rng: np.random.Generator) -> np.ndarray:
    # Drawn at 4x and box-averaged to 8x8: soft edges like the digits' 0..16 ink levels.
    hi = 4 * RAW_SIZE
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    radius = rng.uniform(0.25, 0.45) * hi
    center = (rng.uniform(0.4, 0.6) * hi, rng.uniform(0.4, 0.6) * hi)
    angle = rng.uniform(0, 2 * np.pi)
    mask = shape_mask(kind, hi, center, radius, angle)
    if rng.random() < 0.5:  # outline only: a stroke about as thick as a digit's
        mask &= ~shape_mask(kind, hi, center, radius * rng.uniform(0.55, 0.75), angle)
    ink = mask.astype(np.float32).reshape(RAW_SIZE, 4, RAW_SIZE, 4).mean(axis=(1, 3))
    return _ink_to_paper(ink * rng.uniform(0.7, 1.0))


def _raw_noise(rng: np.random.Generator) -> np.ndarray:
    mode = rng.integers(3)
    if mode == 0:
        ink = rng.uniform(0, 1, size=(RAW_SIZE, RAW_SIZE))
    elif mode == 1:
        ink = (rng.random((RAW_SIZE, RAW_SIZE)) < rng.uniform(0.1, 0.4)).astype(np.float64)
    else:  # blotches: coarse noise upsampled
        coarse = rng.uniform(0, 1, size=(3, 3))
        ink = (
            np.asarray(
                Image.fromarray((coarse * 255).astype(np.uint8)).resize(
                    (RAW_SIZE, RAW_SIZE), Image.Resampling.BILINEAR
                ),
                dtype=np.float64,
            )
            / 255.0
        )
    return _ink_to_paper(ink)


def _raw_texture(rng: np.random.Generator, textures: list[np.ndarray]) -> np.ndarray:
    tex = textures[rng.integers(len(textures))]
    side = int(rng.integers(16, 128))
    y, x = rng.integers(0, tex.shape[0] - side), rng.integers(0, tex.shape[1] - side)
    crop = Image.fromarray(tex[y : y + side, x : x + side])
    return np.asarray(crop.resize((RAW_SIZE, RAW_SIZE), Image.Resampling.BOX), dtype=np.uint8)


def raw_anomalies(n: int, seed: int = ANOMALY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) uint8 paper images and (n,) kind names, kinds in equal turns."""
    rng = np.random.default_rng(seed)
    textures = [load_bundled_image(s)[:, :, 0] for s in _TEXTURES]  # grey images stored as 3 equal channels
    raws, kinds = [], []
    for i in range(n):
        kind = ANOMALY_KINDS[i % len(ANOMALY_KINDS)]
        if kind == "shapes":
            raws.append(_raw_shape(rng))
        elif kind == "noise":
            raws.append(_raw_noise(rng))
        else:
            raws.append(_raw_texture(rng, textures))
        kinds.append(kind)
    return np.stack(raws), np.array(kinds)


@dataclass
class AnomalySplits:
    x_train: np.ndarray  # (N, 1, S, S) uint8 normal digits
    x_val: np.ndarray  # normal: picks the threshold
    x_test: np.ndarray  # normal: held out for the report
    x_anomaly: np.ndarray  # (M, 1, S, S) uint8, as many as x_test
    anomaly_kinds: np.ndarray  # (M,) str
    x_val_anomaly: np.ndarray  # as many as x_val, its own seed: validation curves only
    image_size: int
    raw_train: np.ndarray  # (N, 8, 8) normal digits: augmented afresh every epoch
    raw_val: np.ndarray


def load_anomaly_splits(image_size: int = 32, limit: int | None = None) -> AnomalySplits:
    digits = load_digits_splits(image_size, limit)
    raw, kinds = raw_anomalies(len(digits.x_test))  # as many anomalies as held-out normals
    raw_val, _ = raw_anomalies(len(digits.x_val), seed=ANOMALY_SEED + 1)

    def prep(raws: np.ndarray) -> np.ndarray:
        return np.stack([prepare(to_pil(r), image_size) for r in raws])

    return AnomalySplits(
        digits.x_train,
        digits.x_val,
        digits.x_test,
        prep(raw),
        kinds,
        prep(raw_val),
        image_size,
        digits.raw_train,
        digits.raw_val,
    )
