"""Image conversions shared by training, export checks and the gateway.

Kept free of torch on purpose: the gateway imports it, and the training side uses the very
same function to build its evaluation inputs, so offline and served accuracy see identical
pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_model_image(img: Image.Image, size: int | tuple[int, int] | None, channels: int) -> np.ndarray:
    """PIL image -> uint8 array (C, H, W) with ``channels`` channels, resized to ``size`` if given.

    ``size`` is (width, height) or a square side; None keeps the image's own size.
    """
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            # Composite transparent pixels on white, as a viewer would show them.
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img.convert("RGBA"))
        img = img.convert(mode)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else size
        if img.size != wh:
            img = img.resize(wh, Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if channels == 1:
        return arr[None, :, :].copy()
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def from_chw(arr: np.ndarray) -> Image.Image:
    """uint8 (C, H, W) -> PIL image (L or RGB)."""
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> one (C, H', W') contact sheet, row-major, ``pad`` pixels of ``fill`` between.

    ``cols`` defaults to ceil(sqrt(N)), so 16 images make a 4x4 sheet.
    """
    n, c, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    sheet = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        sheet[:, y : y + h, x : x + w] = img
    return sheet
