"""Natural photos for super-resolution: random HR/LR patch pairs and held-out whole images.

Sources are the photos and textures that scikit-image's and scikit-learn's wheels bundle
(offline). ``HELD_OUT`` images are never cropped for training; they are the evaluation set,
used whole:

* ``skimage:chelsea`` - a cat's face and fur (skimage's ``cat`` is the same photo, so it is
  excluded from training too),
* ``sklearn:flower.jpg`` - a macro photo of a flower,
* ``skimage:camera`` - the classic grey "cameraman" (as three equal channels).

The low-resolution input is always the HR image shrunk with PIL's antialiased bicubic filter
(the usual ``imresize`` degradation) and quantised to uint8, exactly what a served model gets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.bundled import load_bundled_image

TRAIN_SOURCES = (
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:rocket",
    "skimage:hubble_deep_field",
    "skimage:retina",
    "skimage:immunohistochemistry",
    "skimage:brick",
    "skimage:grass",
    "skimage:gravel",
    "sklearn:china.jpg",
)
HELD_OUT = ("skimage:chelsea", "sklearn:flower.jpg", "skimage:camera")
_TRAIN_SCALES = (1.0, 0.6)  # each training source is also used shrunk, for more texture scales
_MIN_PATCH_STD = 6.0  # flat patches (sky, retina's black surround) teach nothing: resample them


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (H/scale, W/scale, 3) uint8 with antialiased bicubic (H, W multiples of scale)."""
    h, w = hr.shape[:2]
    img = Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: (h, w, 3) uint8 -> (scale*h, scale*w, 3) uint8 with PIL's bicubic."""
    h, w = lr.shape[:2]
    return np.asarray(
        Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC), dtype=np.uint8
    )


def crop_to_multiple(img: np.ndarray, m: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % m, : w - w % m]


@functools.lru_cache(maxsize=1)
def _train_images() -> tuple[np.ndarray, ...]:
    out = []
    for source in TRAIN_SOURCES:
        img = load_bundled_image(source)
        for f in _TRAIN_SCALES:
            if f == 1.0:
                out.append(img)
            else:
                h, w = img.shape[:2]
                out.append(
                    np.asarray(
                        Image.fromarray(img).resize((round(w * f), round(h * f)), Image.Resampling.BICUBIC),
                        dtype=np.uint8,
                    )
                )
    return tuple(out)


class PatchSampler:
    """Endless (LR, HR) patch batches from the training photos, deterministic from ``seed``.

    HR patches are ``hr_size`` square (a multiple of ``scale``), randomly flipped and rotated.
    """

    def __init__(self, hr_size: int, scale: int, seed: int) -> None:
        if hr_size % scale:
            raise ValueError(f"hr_size {hr_size} must be a multiple of scale {scale}")
        self.hr_size, self.scale = hr_size, scale
        self.images = _train_images()
        self.rng = np.random.default_rng(seed)

    def _patch(self) -> np.ndarray:
        s = self.hr_size
        for _ in range(10):
            img = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(0, img.shape[0] - s + 1)
            x = self.rng.integers(0, img.shape[1] - s + 1)
            patch = img[y : y + s, x : x + s]
            if patch.std() >= _MIN_PATCH_STD:
                break
        patch = np.rot90(patch, k=int(self.rng.integers(4)))
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, s/scale, s/scale) uint8 LR and (n, 3, s, s) uint8 HR."""
        hr = np.stack([self._patch() for _ in range(n)])
        lr = np.stack([downscale(p, self.scale) for p in hr])
        return lr.transpose(0, 3, 1, 2).copy(), hr.transpose(0, 3, 1, 2).copy()


@dataclass
class HeldOutImage:
    name: str
    hr: np.ndarray  # (H, W, 3) uint8, H and W multiples of the scale
    lr: np.ndarray  # (H/scale, W/scale, 3) uint8


def held_out_images(scale: int, max_side: int | None = None) -> list[HeldOutImage]:
    """The evaluation set, whole. ``max_side`` centre-crops (tiny profile: keeps tests fast)."""
    out = []
    for source in HELD_OUT:
        hr = load_bundled_image(source)
        if max_side:
            h, w = hr.shape[:2]
            y, x = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
            hr = hr[y : y + max_side, x : x + max_side]
        hr = np.ascontiguousarray(crop_to_multiple(hr, scale))
        out.append(HeldOutImage(source.split(":", 1)[1].removesuffix(".jpg"), hr, downscale(hr, scale)))
    return out
