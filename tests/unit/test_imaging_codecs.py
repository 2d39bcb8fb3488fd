"""Preprocessing and decoding: the pixels the model sees, and the refusals before it."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from serving.gateway import codecs, errors
from serving.gateway.settings import Settings
from serving.imaging import to_model_image


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def decode(data: bytes, **settings: int) -> Image.Image:
    return asyncio.run(codecs.decode_image(data, Settings(**settings)))


def test_to_model_image_grey_resize_and_layout() -> None:
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L")
    out = to_model_image(img, 32, 1)
    assert out.shape == (1, 32, 32) and out.dtype == np.uint8


def test_to_model_image_rgb_to_grey_and_keep_size() -> None:
    img = Image.new("RGB", (10, 6), (255, 0, 0))
    out = to_model_image(img, None, 1)
    assert out.shape == (1, 6, 10)
    assert int(out[0, 0, 0]) == round(0.299 * 255)  # ITU-R 601-2 luma, as Pillow converts


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (to_model_image(img, None, 3) == 255).all()


def test_grey_to_rgb_chw() -> None:
    img = Image.new("L", (5, 7), 9)
    out = to_model_image(img, None, 3)
    assert out.shape == (3, 7, 5) and (out == 9).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP"])
def test_decode_formats(fmt: str) -> None:
    img = decode(png_bytes(Image.new("RGB", (12, 9), (1, 2, 3)), fmt))
    assert img.size == (12, 9)


def test_decode_refuses_non_image() -> None:
    with pytest.raises(errors.APIError) as e:
        decode(b"hello, this is not an image")
    assert e.value.status == 415


def test_decode_refuses_empty() -> None:
    with pytest.raises(errors.APIError) as e:
        decode(b"")
    assert e.value.status == 422


def test_decode_refuses_truncated_png() -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(errors.APIError) as e:
        decode(data[: len(data) // 2])
    assert e.value.status == 422 and e.value.code == "corrupt_image"


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image, with a tiny body: refused before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_from_header() -> None:
    with pytest.raises(errors.APIError) as e:
        decode(bomb_png(100_000, 100_000), max_image_pixels=1_000_000)
    assert e.value.status == 413 and "pixels" in e.value.message


def test_encode_png_palette_round_trip() -> None:
    mask = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    data = codecs.encode_png(mask, palette=[0, 0, 0, 255, 0, 0, 0, 255, 0])
    back = Image.open(io.BytesIO(data))
    assert back.mode == "P" and np.array_equal(np.asarray(back), mask)
