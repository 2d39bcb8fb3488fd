"""What users send instead of the dataset's own 8x8 scans: rendered at another size, blocky or
smooth, light on dark, compressed, shifted, tilted, blurred, noisy, in colour or with a palette.

``PERTURBATIONS`` are the robustness table's cases (fixed strength, deterministic per item):
each takes one raw 8x8 paper image (uint8, dark ink on white, as ``digits.raw_digit_images``
gives) and the item's index, and returns the PIL image a user would upload. ``augment`` draws
the same kinds of change at random strengths for training. Which invariance lives where (the
model card and README say the same):

* size, aspect ratio, nearest-neighbour blocks, polarity, margins and small shifts: by design, in
  ``serving.imaging.canonical_document`` (the one preprocessing both ends run);
* rotation, blur, noise, JPEG artefacts, shifts that crop the digit: training-time augmentation
  here (the canonical form cannot undo them, the model must learn them);
* grey / RGB / RGBA / palette / 16-bit / CMYK / EXIF orientation: decoding and mode conversion
  (``serving.imaging.to_mode``, the gateway's codecs).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

PAPER = 255
USER_SIDE = 64  # the size most perturbations render at: a typical small upload


def render(
    raw: np.ndarray, size: tuple[int, int] | int, resample: int = Image.Resampling.BICUBIC
) -> Image.Image:
    """An 8x8 paper image drawn at ``size`` (side or (width, height)), smooth by default."""
    wh = (size, size) if isinstance(size, int) else size
    return Image.fromarray(raw, mode="L").resize(wh, resample)


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    out = Image.open(io.BytesIO(data))
    out.load()
    return out


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    return decode(jpeg_bytes(img, quality))


def _noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(arr + rng.normal(0, sigma, arr.shape)), 0, 255).astype(np.uint8))


def _shift(img: Image.Image, dx: int, dy: int) -> Image.Image:
    """Content moved by (dx, dy) pixels; what leaves the frame is lost, paper comes in."""
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), fillcolor=PAPER)


def _rotate(img: Image.Image, degrees: float) -> Image.Image:
    return img.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=PAPER)


def _aspect(raw: np.ndarray) -> Image.Image:
    """The digit on a 3:2 sheet (paper margins left and right), drawn at 96x64."""
    canvas = np.full((8, 12), PAPER, dtype=np.uint8)
    canvas[:, 2:10] = raw
    return render(canvas, (96, 64))


def _coloured(raw: np.ndarray) -> Image.Image:
    """Blue ink on cream paper, RGB."""
    ink = 1.0 - np.asarray(render(raw, USER_SIDE), dtype=np.float64)[..., None] / 255.0
    paper, pen = np.array([250.0, 245.0, 230.0]), np.array([20.0, 40.0, 120.0])
    return Image.fromarray(np.round(paper * (1 - ink) + pen * ink).astype(np.uint8), mode="RGB")


def _rgba(raw: np.ndarray) -> Image.Image:
    """Black ink whose alpha is the ink coverage on a transparent sheet (a drawing app's export)."""
    ink = 255 - np.asarray(render(raw, USER_SIDE), dtype=np.uint8)
    rgba = np.zeros((USER_SIDE, USER_SIDE, 4), dtype=np.uint8)
    rgba[..., 3] = ink
    return Image.fromarray(rgba, mode="RGBA")


def _palette(raw: np.ndarray) -> Image.Image:
    return render(raw, USER_SIDE).convert("RGB").quantize(16)


Perturbation = Callable[[np.ndarray, int], Image.Image]

PERTURBATIONS: dict[str, Perturbation] = {
    "clean": lambda r, i: Image.fromarray(r, mode="L"),  # the dataset's own 8x8 scan
    "resize": lambda r, i: render(r, 57),  # smooth upscale to an odd size
    "aspect": lambda r, i: _aspect(r),
    "nearest": lambda r, i: render(r, USER_SIDE, Image.Resampling.NEAREST),  # x8 blocks
    "nearest_odd": lambda r, i: render(r, 50, Image.Resampling.NEAREST),  # 6.25x: blocks of 6 and 7
    "polarity": lambda r, i: Image.fromarray(255 - np.asarray(render(r, USER_SIDE))),  # MNIST's way
    "jpeg50": lambda r, i: _jpeg(render(r, USER_SIDE), 50),
    "shift": lambda r, i: _shift(render(r, USER_SIDE), (5, -5, 4, -4)[i % 4], (-4, 5, 5, -5)[i % 4]),
    "rotate": lambda r, i: _rotate(render(r, USER_SIDE), 10.0 if i % 2 else -10.0),
    "blur": lambda r, i: render(r, USER_SIDE).filter(ImageFilter.GaussianBlur(2.0)),
    "noise": lambda r, i: _noise(render(r, USER_SIDE), 12.0, np.random.default_rng(i)),
    "rgb": lambda r, i: _coloured(r),
    "rgba": lambda r, i: _rgba(r),
    "palette": lambda r, i: _palette(r),
}


# Perturbations whose upload is a JPEG file: (the image before compression, quality).
JPEG_UPLOADS: dict[str, tuple[Perturbation, int]] = {"jpeg50": (lambda r, i: render(r, USER_SIDE), 50)}


def upload(name: str, raw: np.ndarray, i: int) -> tuple[bytes, str]:
    """(bytes, content type) a user would send for ``PERTURBATIONS[name]``: the JPEG file itself for
    the compressed case (decoding it gives exactly ``PERTURBATIONS[name]``'s pixels), else a PNG of
    the image in its own mode (grey, RGB, RGBA or palette) at its own size."""
    if name in JPEG_UPLOADS:
        before, quality = JPEG_UPLOADS[name]
        return jpeg_bytes(before(raw, i), quality), "image/jpeg"
    return png_bytes(PERTURBATIONS[name](raw, i)), "image/png"


def augment(raw: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One random user-like rendering of an 8x8 paper image, for training: any size and resampling,
    a small shift and rotation, and sometimes blur, noise or JPEG compression."""
    side = int(rng.integers(8, 65))
    resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST)[
        rng.integers(3)
    ]
    img = render(raw, side, resample)
    img = _rotate(img, float(rng.uniform(-12.0, 12.0)))
    limit = max(1, round(0.1 * side))
    img = _shift(img, int(rng.integers(-limit, limit + 1)), int(rng.integers(-limit, limit + 1)))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 2.5)) * side / USER_SIDE))
    if rng.random() < 0.3:
        img = _noise(img, float(rng.uniform(2.0, 16.0)), rng)
    if rng.random() < 0.3:
        img = _jpeg(img, int(rng.integers(45, 96)))
    return img
