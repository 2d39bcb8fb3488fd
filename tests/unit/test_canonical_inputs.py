"""The one shared preprocessing on what users send: the "document" canonicalisation and the mode,
16-bit, CMYK and EXIF handling, checked against the dataset's own pixels."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from serving.gateway import codecs
from serving.gateway.settings import Settings
from serving.imaging import canonical_document, to_mode, to_model_image, undo_nearest_upscale
from training.data.digits import prepare, raw_digit_images, to_pil
from training.data.perturb import PERTURBATIONS, render

S = 32


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return raw_digit_images()[0][:60]


def clean(raw: np.ndarray) -> np.ndarray:
    return prepare(to_pil(raw), S).astype(np.int16)


def decode(img: Image.Image, fmt: str = "PNG", **save: object) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return asyncio.run(codecs.decode_image(buf.getvalue(), Settings()))


@pytest.mark.parametrize("side", [16, 50, 57, 64, (64, 40), (33, 90)])
def test_nearest_upscales_are_undone_exactly(digits: np.ndarray, side: int | tuple[int, int]) -> None:
    """Any nearest-neighbour upscale, integer factor or not, square or not, gives the pixels of the
    original scan: the README's blocky 64x64 samples see what training saw."""
    for raw in digits:
        blocky = render(raw, side, Image.Resampling.NEAREST)
        assert (prepare(blocky, S) == clean(raw)).all()


def test_undo_nearest_keeps_smooth_and_small_images() -> None:
    smooth = np.asarray(render(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, 64))
    assert undo_nearest_upscale(smooth).shape == smooth.shape
    tiny = np.arange(9, dtype=np.uint8).reshape(3, 3)
    assert (undo_nearest_upscale(tiny) == tiny).all()
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    assert undo_nearest_upscale(noise).shape == (40, 40)


def test_polarity_is_undone(digits: np.ndarray) -> None:
    """White ink on black (MNIST's way) -> the same pixels as dark ink on paper."""
    for raw in digits:
        assert (prepare(Image.fromarray(255 - raw), S) == clean(raw)).all()
    dark = PERTURBATIONS["polarity"](digits[0], 0)
    light = render(digits[0], 64)
    assert (prepare(dark, S) == prepare(light, S)).all()


def test_margins_and_aspect_ratio_do_not_matter(digits: np.ndarray) -> None:
    for raw in digits:
        sheet = np.full((12, 20), 255, dtype=np.uint8)
        sheet[3:11, 5:13] = raw  # off-centre on a wide sheet
        assert (prepare(Image.fromarray(sheet), S) == clean(raw)).all()


def test_smooth_renderings_stay_close(digits: np.ndarray) -> None:
    """Smooth upscales, colour, palette and transparency: not bit-identical (resampling), but near."""
    for name in ("resize", "aspect", "rgb", "rgba", "palette", "jpeg50"):
        err = np.mean(
            [np.abs(prepare(PERTURBATIONS[name](r, i), S) - clean(r)).mean() for i, r in enumerate(digits)]
        )
        assert err < 30, (name, err)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "1", "I;16", "I", "F", "CMYK"])
def test_every_mode_gives_the_model_shape(mode: str, digits: np.ndarray) -> None:
    img = render(digits[3], 40).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        img = Image.fromarray(np.asarray(render(digits[3], 40)).astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(np.asarray(render(digits[3], 40)).astype(np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(render(digits[3], 40)).astype(np.float32) / 255.0)
    assert img is not None
    out = to_model_image(img, S, 1, "document", 8)
    assert out.shape == (1, S, S) and out.dtype == np.uint8
    if mode not in ("1", "P"):  # lossless modes: the same pixels as the grey image
        ref = to_model_image(render(digits[3], 40), S, 1, "document", 8)
        assert np.abs(out.astype(int) - ref).max() <= 2, mode


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    """Pillow's own I;16 -> L conversion clips at 255: a 16-bit scan would come out blank white."""
    grey = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    img = Image.fromarray(grey.astype(np.uint16) * 257)
    assert (np.asarray(to_mode(img, "L")) == grey).all()
    assert (to_model_image(img, None, 3)[0] == grey).all()


def test_sixteen_bit_png_through_the_decoder(digits: np.ndarray) -> None:
    img = Image.fromarray(digits[5].astype(np.uint16) * 257)
    assert (prepare(decode(img), S) == clean(digits[5])).all()


def test_cmyk_jpeg_is_converted(digits: np.ndarray) -> None:
    img = decode(render(digits[7], 64).convert("CMYK"), "JPEG", quality=95)
    out = prepare(img, S)
    assert np.abs(out - clean(digits[7])).mean() < 30


def test_exif_orientation_is_honoured() -> None:
    """A camera stores the sensor's pixels and the turn in EXIF (6 = rotate 90 degrees clockwise)."""
    arr = np.full((30, 60), 255, dtype=np.uint8)
    arr[:, :10] = 0  # ink on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    shown = np.asarray(img.convert("L"))
    assert shown.shape == (60, 30)  # turned: portrait
    assert shown[:10].mean() < 60 and shown[-10:].mean() > 200  # the ink is now at the top


def test_none_mode_is_the_plain_resize(digits: np.ndarray) -> None:
    """Models without the parameter (photos, users' own models) get exactly the old preprocessing."""
    img = render(digits[1], 64, Image.Resampling.NEAREST)
    plain = np.asarray(img.resize((S, S), Image.Resampling.BILINEAR))[None]
    assert (to_model_image(img, S, 1) == plain).all()
    with pytest.raises(ValueError):
        to_model_image(img, S, 1, "photo")


def test_canonical_document_of_blank_and_uniform_images() -> None:
    for value in (0, 128, 255):
        out = np.asarray(canonical_document(Image.new("L", (30, 20), value), 8))
        assert out.shape[0] == out.shape[1] and (out == out.flat[0]).all()


def _exact_ink_box(arr: np.ndarray, background: float) -> tuple[int, int, int, int]:
    """_ink_box's rule at full resolution in float64 (what it did for every size before)."""
    contrast = background - float(arr.min())
    ink = np.clip(background - arr.astype(np.float64) - 0.15 * contrast, 0, None)
    spans = []
    for axis in (1, 0):
        cum = np.cumsum(ink.sum(axis=axis)) / ink.sum()
        spans += [int(np.searchsorted(cum, 0.01)), int(np.searchsorted(cum, 0.99)) + 1]
    return spans[0], spans[1], spans[2], spans[3]


@pytest.mark.parametrize("shape", [(2000, 2000), (1500, 900), (257, 300)])
def test_ink_box_of_big_uploads_matches_the_full_resolution_search(digits: np.ndarray, shape: tuple) -> None:
    """A big upload's box is searched on a block-averaged copy: each edge within one block of the
    exact full-resolution search; images up to _BOX_SEARCH_SIDE keep the exact search."""
    from serving.imaging import _BOX_SEARCH_SIDE, _ink_box

    factor = -(-max(shape) // _BOX_SEARCH_SIDE)
    for raw in digits[:5]:
        arr = np.asarray(render(raw, (shape[1], shape[0])))
        exact = _exact_ink_box(arr, 255.0)
        got = _ink_box(arr, 255.0)
        assert got is not None
        assert all(abs(g - e) <= factor for g, e in zip(got, exact, strict=True)), (got, exact)
    small = np.asarray(render(digits[0], 64))
    assert _ink_box(small, 255.0) == _exact_ink_box(small, 255.0)
