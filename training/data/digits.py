"""scikit-learn's bundled handwritten digits (1,797 images, 8x8, 10 classes) as 'paper' images.

The raw values are ink intensities 0..16. We render them as a person would see a scan: dark
ink on a white background, uint8, then bring them to the model's size with the same function the
gateway applies to an upload (``prepare``: ``serving.imaging.to_model_image`` with the "document"
canonicalisation on the digits' native 8x8 grid, the parameters export writes for the gateway).
The train/test split is fixed (stratified, seed 0), so the held-out test split never changes
between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from serving.imaging import to_model_image

LABELS = [str(i) for i in range(10)]
CANONICALIZE = "document"  # serving.imaging's canonicalisation for digit images (export writes it)
NATIVE_SIZE = 8  # the data's own grid: uploads are area-averaged to it before the resize
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def raw_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 paper images and (N,) int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ink = d.images / 16.0
    img = np.clip(np.round(255.0 * (1.0 - ink)), 0, 255).astype(np.uint8)
    return img, d.target.astype(np.int64)


def to_pil(raw: np.ndarray) -> Image.Image:
    return Image.fromarray(raw, mode="L")


def prepare(img: Image.Image, image_size: int) -> np.ndarray:
    """Any image of a digit -> (1, S, S) uint8 model input, exactly as the gateway prepares an upload."""
    return to_model_image(img, image_size, 1, CANONICALIZE, NATIVE_SIZE)


def augmented_batch(
    raw: np.ndarray, image_size: int, rng: np.random.Generator, fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) raw -> (N, 1, S, S) model inputs, ``fraction`` of them drawn by ``perturb.augment``
    (the rest clean), and the (N,) mask of the augmented ones."""
    from training.data.perturb import augment

    mask = rng.random(len(raw)) < fraction
    out = np.stack(
        [prepare(augment(r, rng) if m else to_pil(r), image_size) for r, m in zip(raw, mask, strict=True)]
    )
    return out, mask


@dataclass
class DigitSplits:
    x_train: np.ndarray  # (N, 1, S, S) uint8
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    raw_test: np.ndarray  # (N, 8, 8) uint8: what `make` writes out as sample PNGs
    image_size: int
    raw_train: np.ndarray  # (N, 8, 8) uint8: augmented afresh every epoch
    raw_val: np.ndarray


def split_indices(n_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(n_labels))
    train_val, test = train_test_split(
        idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=n_labels
    )
    train, val = train_test_split(
        train_val, test_size=0.1, random_state=SPLIT_SEED, stratify=n_labels[train_val]
    )
    return train, val, test


def load_digits_splits(image_size: int = 32, limit: int | None = None) -> DigitSplits:
    raw, y = raw_digit_images()
    train, val, test = split_indices(y)
    if limit:
        train, val, test = train[:limit], val[: max(limit // 4, 20)], test[: max(limit // 4, 20)]

    def prep(ix: np.ndarray) -> np.ndarray:
        return np.stack([prepare(to_pil(raw[i]), image_size) for i in ix])

    return DigitSplits(
        prep(train),
        y[train],
        prep(val),
        y[val],
        prep(test),
        y[test],
        raw[test],
        image_size,
        raw[train],
        raw[val],
    )
