"""The shared input validators: each bad input is a 4xx APIError with a code saying what was wrong."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from serving.gateway import validation as v
from serving.gateway.errors import APIError
from serving.gateway.settings import Settings

S = Settings()


def refused(fn, *args, **kwargs) -> APIError:  # noqa: ANN001
    with pytest.raises(APIError) as info:
        fn(*args, **kwargs)
    assert 400 <= info.value.status < 500
    return info.value


@pytest.mark.parametrize(("w", "h"), [(1, 100_000), (100_000, 1), (20_000, 10_000), (65, 1)])
def test_absurd_image_geometry_is_422(w: int, h: int) -> None:
    err = refused(v.check_image_geometry, w, h, S)
    assert err.status == 422 and err.code == "invalid_image_size" and f"{w}x{h}" in err.message


@pytest.mark.parametrize(("w", "h"), [(1, 1), (64, 1), (4000, 3000), (16384, 16384)])
def test_ordinary_geometry_passes(w: int, h: int) -> None:
    v.check_image_geometry(w, h, S)


def test_exotic_modes_are_converted_or_refused() -> None:
    assert v.normalize_image_mode(Image.new("LAB", (4, 4))).mode == "RGB"
    assert v.normalize_image_mode(Image.new("I;16", (4, 4))).mode == "I;16"  # to_model_image handles it
    err = refused(v.normalize_image_mode, Image.new("La", (4, 4)))
    assert err.code == "unsupported_image_mode"


def test_decode_image_applies_the_checks() -> None:
    import asyncio

    from serving.gateway.codecs import decode_image

    buf = io.BytesIO()
    Image.new("L", (2000, 2)).save(buf, format="PNG")  # 1000:1
    err = refused(lambda: asyncio.run(decode_image(buf.getvalue(), S)))
    assert err.code == "invalid_image_size"


def test_json_tensor_ok_flat_and_nested() -> None:
    a = v.tensor_from_json("x", "FP32", [2, 2], [[1, 2], [3, 4.5]], 100)
    assert a.dtype == np.float32 and a.shape == (2, 2) and a[1, 1] == 4.5
    b = v.tensor_from_json("x", "UINT8", [4], [0, 1, 2, 255], 100)
    assert b.dtype == np.uint8 and b.tolist() == [0, 1, 2, 255]
    s = v.tensor_from_json("t", "BYTES", [1, 2], ["a", "é"], 100)
    assert s.shape == (1, 2) and s[0, 1] == "é".encode()
    assert v.tensor_from_json("b", "BOOL", [2], [True, False], 10).dtype == np.bool_


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "code"),
    [
        ("FP32", [2], [1.0, math.nan], "non_finite_tensor"),
        ("FP32", [2], [1.0, math.inf], "non_finite_tensor"),
        ("FP16", [1], [1e6], "value_out_of_range"),
        ("UINT8", [2], [1, 300], "value_out_of_range"),
        ("INT32", [2], [1, 2.5], "invalid_tensor"),
        ("INT32", [2], [1, True], "invalid_tensor"),
        ("FP32", [2], [1, "2"], "invalid_tensor"),
        ("FP32", [2, 2], [[1, 2], [3]], "shape_mismatch"),  # nesting is not checked, the count is
        ("FP32", [2, 2], [1, 2, 3], "shape_mismatch"),
        ("FP32", [-1], [1], "invalid_shape"),
        ("FP32", [1.5], [1], "invalid_shape"),
        ("FP32", "2", [1, 2], "invalid_shape"),
        ("COMPLEX", [1], [1], "invalid_datatype"),
        ("BYTES", [1], [1], "invalid_tensor"),
    ],
)
def test_bad_json_tensors_are_422(datatype: str, shape: object, data: object, code: str) -> None:
    err = refused(v.tensor_from_json, "in0", datatype, shape, data, 1000)
    assert err.status == 422 and err.code == code and "'in0'" in err.message


def test_too_many_elements_is_413_before_allocation() -> None:
    err = refused(v.tensor_from_json, "x", "FP32", [100_000, 100_000], [], 1_000_000)
    assert err.status == 413
    assert refused(v.check_shape, "x", [2**40, 2**40], 10).status == 413


def test_deep_nesting_is_refused() -> None:
    data: list = [1.0]
    for _ in range(100):
        data = [data]
    assert refused(v.tensor_from_json, "x", "FP32", [1] * 101, data, 10).code == "invalid_tensor"


def test_raw_tensors() -> None:
    raw = np.array([1, 2, 3], dtype="<f4").tobytes()
    assert v.tensor_from_raw("x", "FP32", [3], raw, 10).tolist() == [1, 2, 3]
    assert refused(v.tensor_from_raw, "x", "FP32", [4], raw, 10).code == "shape_mismatch"
    bad = np.array([1, np.nan], dtype="<f4").tobytes()
    assert refused(v.tensor_from_raw, "x", "FP32", [2], bad, 10).code == "non_finite_tensor"
    ok_bytes = (2).to_bytes(4, "little") + b"hi" + (0).to_bytes(4, "little")
    assert v.tensor_from_raw("s", "BYTES", [2], ok_bytes, 10).tolist() == [b"hi", b""]
    assert refused(v.tensor_from_raw, "s", "BYTES", [2], ok_bytes[:-2], 10).code == "shape_mismatch"
    assert (
        refused(v.tensor_from_raw, "s", "BYTES", [1], (99).to_bytes(4, "little") + b"x", 10).code
        == "shape_mismatch"
    )


def test_check_tensor_against_the_model() -> None:
    a = np.zeros((2, 1, 32, 32), np.uint8)
    assert v.check_tensor("image", a, "UINT8", "UINT8", (1, 32, 32), batched=True) is a
    assert refused(v.check_tensor, "image", a, "FP32", "UINT8", (1, 32, 32), True).code == "datatype_mismatch"
    assert (
        refused(v.check_tensor, "image", a[:, :, :16], "UINT8", "UINT8", (1, 32, 32), True).code
        == "shape_mismatch"
    )
    assert (
        refused(v.check_tensor, "image", a[0], "UINT8", "UINT8", (1, 32, 32), True).code == "shape_mismatch"
    )
    assert (
        refused(v.check_tensor, "image", a[:0], "UINT8", "UINT8", (1, 32, 32), True).code == "shape_mismatch"
    )
    f = np.zeros((1, 3, 8, 8), np.float32)
    assert v.check_tensor("x", f, "FP32", "FP32", (3, -1, -1), True) is f  # -1: any H, W
    f[0, 0, 0, 0] = np.inf
    assert refused(v.check_tensor, "x", f, "FP32", "FP32", (3, -1, -1), True).code == "non_finite_tensor"


def test_text_validators() -> None:
    assert v.decode_utf8("héllo".encode()) == "héllo"
    assert refused(v.decode_utf8, b"\xff\xfe").code == "invalid_utf8"
    assert v.check_prompt("ROMEO:", 10) == "ROMEO:"
    assert v.check_prompt(b"ROMEO:", 10) == "ROMEO:"
    assert refused(v.check_prompt, b"\xc3(", 10).code == "invalid_utf8"
    assert refused(v.check_prompt, "x" * 11, 10).code == "prompt_too_long"
    assert refused(v.check_prompt, "", 10).code == "empty_prompt"
    assert refused(v.check_prompt, "a\x00b", 10).code == "invalid_prompt"
    assert refused(v.check_prompt, "a\ud800", 10).code == "invalid_utf8"
    assert v.check_range("temperature", 0.7, 0.0, 2.0) == 0.7
    for bad in (-0.1, 2.5, math.nan, math.inf):
        assert refused(v.check_range, "temperature", bad, 0.0, 2.0).code == "invalid_parameter"


def test_decompression_bomb_is_refused_from_the_header() -> None:
    """A PNG whose header claims 100000 x 100000 pixels: refused (413) before any pixel is decoded
    (were it decoded, the truncated data would give a 422, and a real one 10 GB of memory)."""
    import asyncio
    import struct
    import zlib

    from serving.gateway.codecs import decode_image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = png.index(b"IHDR")
    png[ihdr + 4 : ihdr + 12] = struct.pack(">II", 100_000, 100_000)
    png[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr : ihdr + 17])))
    err = refused(lambda: asyncio.run(decode_image(bytes(png), S)))
    assert err.status == 413 and "100000x100000" in err.message
