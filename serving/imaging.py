"""Image conversions shared by training, export checks and the gateway.

Kept free of torch on purpose: the gateway imports it, and the training side uses the very
same function to build its training and evaluation inputs, so offline and served accuracy see
identical pixels.

Canonicalisation (``canonicalize=``, written by export as the model parameter of that name):

* ``"none"``: mode conversion and a bilinear resize, nothing else (photos, scenes, users' models).
* ``"document"``: an image of ink on a background (the digits), brought to the form the model was
  trained on before the resize, so what does not change a digit's meaning cannot change the answer:
  exact nearest-neighbour upscales are undone (block structure detected, one pixel per block kept),
  light-on-dark images are inverted to dark ink on light paper (decided from the border, where the
  background is), non-square images are padded to a square with the background, and, with
  ``native_size``, the image is area-averaged down to the data's own grid (sklearn's digits are
  8x8 counts of 4x4 blocks: the same box average) before the bilinear resize to the model's size.
  Training runs every image, clean or augmented, through this function too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CANONICALIZE_MODES = ("none", "document")
_BLOCK_TOL = (
    0  # grey levels: a lossless nearest upscale repeats pixels exactly (lossy ones fall to the box average)
)
_BOX_SEARCH_SIDE = 256  # longest side the ink box is searched at (bigger uploads are block-averaged first)


def _high_bit_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey (I;16*, I, F) -> L by scaling, not clipping: Pillow's own convert
    clips everything above 255 to white, which turns a 16-bit scan into a blank page."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F" and arr.size and np.nanmax(arr) <= 1.0 and np.nanmin(arr) >= 0.0:
        arr = arr * 255.0  # float images in [0, 1]
    elif arr.size and np.nanmax(arr) > 255:
        arr = arr / 257.0 if np.nanmax(arr) <= 65535 else 255.0 * arr / np.nanmax(arr)
    return Image.fromarray(np.clip(np.nan_to_num(np.round(arr)), 0, 255).astype(np.uint8), mode="L")


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """``img`` as L or RGB: transparency composited on white, 16-bit scaled, CMYK/palette converted."""
    if img.mode == mode:
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_bit_to_8bit(img)
        return img if mode == "L" else img.convert(mode)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Composite transparent pixels on white, as a viewer would show them.
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img.convert("RGBA"))
    return img.convert(mode)


def _source_length(changes: np.ndarray, n: int) -> int:
    """Smallest source length m <= n/2 such that a nearest-neighbour upscale m -> n puts a block
    boundary at every position where ``changes`` is True (``changes[x]``: pixel x differs from
    x-1); ``n`` when there is none, i.e. the axis is not a nearest upscale."""
    where = np.flatnonzero(changes)
    if len(where) > n // 2:  # an upscale by >= 2 has at most n/2 boundaries
        return n
    x = where.astype(np.float64)
    for m in range(1, n // 2 + 1):
        # Pillow maps output x to about floor((x + 0.5) m / n) (fixed-point: exact ties may fall
        # either way, hence +-eps); numpy/OpenCV-style repeats to floor(x m / n).
        ok = np.zeros(len(x), dtype=bool)
        for shift, eps in ((0.5, 1e-6), (0.5, -1e-6), (0.0, 1e-9)):
            ok |= np.floor((x + shift) * m / n + eps) != np.floor((x - 1 + shift) * m / n + eps)
        if ok.all():
            return m
    return n


def undo_nearest_upscale(arr: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 -> the smallest image whose nearest-neighbour upscale it is (itself if none).

    Each axis on its own: the image is cut into the detected blocks and one pixel per block kept;
    lossless, since every block is constant (within ``_BLOCK_TOL`` levels)."""
    a = arr if _BLOCK_TOL == 0 else arr.astype(np.int16)
    out = arr
    for axis in (0, 1):
        n = a.shape[axis]
        if n < 4:
            continue
        if _BLOCK_TOL == 0:  # uint8 equality: no int16 copy of a big upload
            head = tuple(slice(1, None) if i == axis else slice(None) for i in range(a.ndim))
            tail = tuple(slice(None, -1) if i == axis else slice(None) for i in range(a.ndim))
            diff = a[head] != a[tail]
        else:
            diff = np.abs(np.diff(a, axis=axis)) > _BLOCK_TOL
        other = tuple(i for i in range(a.ndim) if i != axis)
        changes = np.r_[False, diff.any(axis=other)]
        m = _source_length(changes, n)
        if m < n:
            centres = np.minimum(((np.arange(m) + 0.5) * n / m).astype(int), n - 1)
            out = np.take(out, centres, axis=axis)
            a = np.take(a, centres, axis=axis)
    return out


def _border(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    t = max(1, min(h, w) // 8)
    return np.concatenate([arr[:t].ravel(), arr[-t:].ravel(), arr[:, :t].ravel(), arr[:, -t:].ravel()])


def _ink_box(arr: np.ndarray, background: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) holding 98% of the ink mass of a dark-on-light image, or None when
    it is blank. Ink weight counts only what is darker than 15% of the contrast, so faint JPEG
    ringing and mild noise do not widen the box, and the 1% tails drop stray specks.

    A big upload is searched on a block-averaged copy no longer than ``_BOX_SEARCH_SIDE`` (Pillow's
    integer ``reduce``, in C) and the box scaled back outwards: a 2000x2000 scan costs a few ms
    instead of a hundred or more, the box is at most one block (< 0.5% of the side) looser, and
    images up to that side (all training inputs) are searched at full resolution as before."""
    h, w = arr.shape
    factor = -(-max(h, w) // _BOX_SEARCH_SIDE)  # ceil
    small = arr if factor <= 1 else np.asarray(Image.fromarray(arr).reduce(factor))
    contrast = background - float(small.min())
    if contrast < 32:  # blank or nearly: nothing to centre on
        return None
    ink = np.clip(background - small.astype(np.float64) - 0.15 * contrast, 0, None)
    total = ink.sum()
    if total <= 0:
        return None
    spans = []
    for axis, n in ((1, h), (0, w)):  # rows (sum over columns), then columns
        cum = np.cumsum(ink.sum(axis=axis)) / total
        lo = int(np.searchsorted(cum, 0.01))
        hi = int(np.searchsorted(cum, 0.99)) + 1
        lo, hi = lo * factor, min(n, hi * factor)  # reduce's last block may be partial
        spans.append((lo, max(hi, lo + 1)))
    (top, bottom), (left, right) = spans
    return top, bottom, left, right


def canonical_document(img: Image.Image, native_size: int | None = None) -> Image.Image:
    """A grey document image (ink on background) in the training form: dark ink on light paper,
    blocks of a nearest upscale undone, cropped to the ink and padded to a centred square with the
    background (so margins, small shifts and the frame's aspect ratio do not matter), and with
    ``native_size`` area-averaged to that side (never enlarged here: the caller's resize does it)."""
    arr = undo_nearest_upscale(np.asarray(to_mode(img, "L"), dtype=np.uint8))
    bg = float(np.median(_border(arr)))
    if bg < 128:  # light ink on a dark background (MNIST's way): invert (the border's median with it)
        arr = 255 - arr
        bg = 255.0 - bg
    box = _ink_box(arr, bg)
    if box is not None:
        top, bottom, left, right = box
        arr = arr[top:bottom, left:right]
    h, w = arr.shape
    if h != w:
        side = max(h, w)
        sq = np.full((side, side), np.uint8(round(bg)), dtype=np.uint8)
        y, x = (side - h) // 2, (side - w) // 2
        sq[y : y + h, x : x + w] = arr
        arr = sq
    out = Image.fromarray(np.ascontiguousarray(arr), mode="L")
    if native_size is not None and out.size[0] > native_size:
        out = out.resize((native_size, native_size), Image.Resampling.BOX)
    return out


def to_model_image(
    img: Image.Image,
    size: int | tuple[int, int] | None,
    channels: int,
    canonicalize: str = "none",
    native_size: int | None = None,
) -> np.ndarray:
    """PIL image -> uint8 array (C, H, W) with ``channels`` channels, resized to ``size`` if given.

    ``size`` is (width, height) or a square side; None keeps the image's own size (after the
    canonicalisation). ``canonicalize`` is one of CANONICALIZE_MODES (see the module docstring);
    ``native_size`` only applies to "document".
    """
    if canonicalize not in CANONICALIZE_MODES:
        raise ValueError(f"canonicalize={canonicalize!r}: one of {', '.join(CANONICALIZE_MODES)}")
    mode = "L" if channels == 1 else "RGB"
    if canonicalize == "document":
        img = canonical_document(img, native_size)
    img = to_mode(img, mode)
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
