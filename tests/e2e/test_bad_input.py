"""Bad input through the real gateway process: every refusal is a 4xx JSON error naming the problem,
odd-but-valid images are served, and the service stays up."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.procs import GatewayHandle

pytestmark = pytest.mark.slow


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bomb() -> bytes:
    png = bytearray(encode(Image.new("L", (8, 8))))
    i = png.index(b"IHDR")
    png[i + 4 : i + 12] = struct.pack(">II", 60_000, 60_000)
    png[i + 17 : i + 21] = struct.pack(">I", zlib.crc32(bytes(png[i : i + 17])))
    return bytes(png)


DIGIT = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(DIGIT).convert("RGBA"),  # 4 channels into a 1-channel model
        Image.fromarray(DIGIT).convert("LA"),
        Image.fromarray(DIGIT).convert("P"),
        Image.fromarray(DIGIT.astype(np.uint16) * 256),  # 16-bit grayscale (mode I;16)
        Image.fromarray(DIGIT).convert("1"),
        Image.fromarray(DIGIT).resize((1, 1)),
    ],
    ids=["rgba", "la", "palette", "16bit", "1bit", "1x1"],
)
def test_odd_but_valid_images_are_served(gateway: GatewayHandle, image: Image.Image) -> None:
    r = httpx.post(f"{gateway.url}/v1/classify", content=encode(image), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text


def test_content_type_is_decided_by_the_bytes(gateway: GatewayHandle) -> None:
    png = encode(Image.fromarray(DIGIT))
    assert (
        httpx.post(
            f"{gateway.url}/v1/classify", content=png, headers={"content-type": "image/jpeg"}
        ).status_code
        == 200
    )  # a lying type: the bytes say PNG
    jpeg = encode(Image.fromarray(DIGIT).convert("CMYK"), "JPEG")  # CMYK JPEG
    assert (
        httpx.post(
            f"{gateway.url}/v1/classify", content=jpeg, headers={"content-type": "image/png"}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("body", "ctype", "params", "headers", "status", "code"),
    [
        (b"#!/bin/sh\necho hi", "image/png", {}, {}, 415, "unsupported_media_type"),
        (b"{}", "application/json", {}, {}, 415, "unsupported_media_type"),
        (encode(Image.fromarray(DIGIT))[:60], "image/png", {}, {}, 422, "corrupt_image"),
        (encode(Image.new("L", (1, 100_000))), "image/png", {}, {}, 422, "invalid_image_size"),
        (encode(Image.new("L", (20_000, 2))), "image/png", {}, {}, 422, "invalid_image_size"),
        (bomb(), "image/png", {}, {}, 413, "payload_too_large"),
        (encode(Image.fromarray(DIGIT)), "image/png", {"top_k": "0"}, {}, 422, "invalid_parameter"),
        (encode(Image.fromarray(DIGIT)), "image/png", {"top_k": "NaN"}, {}, 422, "invalid_parameter"),
        (
            encode(Image.fromarray(DIGIT)),
            "image/png",
            {},
            {"X-Request-Timeout": "-1"},
            422,
            "invalid_parameter",
        ),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", {}, {}, 422, "missing_file"),
    ],
    ids=[
        "script-as-png",
        "json",
        "truncated",
        "1x100000",
        "20000x2",
        "bomb",
        "top_k=0",
        "top_k=NaN",
        "bad-deadline",
        "broken-multipart",
    ],
)
def test_bad_input_is_a_4xx_json_error(
    gateway: GatewayHandle, body: bytes, ctype: str, params: dict, headers: dict, status: int, code: str
) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/classify", content=body, params=params, headers={"content-type": ctype, **headers}
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and r.headers["x-request-id"]
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
