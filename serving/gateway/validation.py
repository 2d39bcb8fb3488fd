"""Shared input validators: every front door refuses bad input the same way, before inference.

Each function either returns the checked value or raises :class:`errors.APIError` with a 4xx
status and a ``code`` that says what was wrong (the message says where). Routes call them; they
never need to catch anything: the error handlers turn the exception into
``{"error": {"code", "message"}}``.

Images (task routes; ``codecs.decode_image`` calls :func:`check_image` on every decoded image)
    check_image_geometry   absurd sizes: longest side, aspect ratio                      -> 422
    normalize_image_mode   exotic pixel modes (LAB, La, ...) converted or refused        -> 422
Tensors (KServe v2 JSON / binary inputs, HTTP and gRPC)
    check_shape            negative or non-integer dims, too many elements               -> 422 / 413
    tensor_from_json       JSON ``data`` -> ndarray: ragged, wrong type, out of range    -> 422
    tensor_from_raw        binary (raw_input_contents / binary extension) -> ndarray     -> 422
    check_finite           NaN / inf in floating-point tensors                          -> 422
    check_tensor           datatype and shape against the model's input                 -> 422
Text (generation routes)
    decode_utf8            invalid UTF-8 bytes                                          -> 422
    check_prompt           empty, NUL bytes, longer than ``max_prompt_chars``           -> 422
    check_range            numeric parameter outside [lo, hi] (also NaN)                -> 422
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from PIL import Image
from pydantic import BeforeValidator

from serving.gateway import errors
from serving.gateway.settings import Settings

# ---------------------------------------------------------------------------------------------
# Images

# Modes that serving.imaging.to_model_image converts to L or RGB without trouble (checked for
# every Pillow mode); anything else is converted to RGB here, or refused.
_MODES_OK = frozenset(
    {
        "1",
        "L",
        "P",
        "RGB",
        "RGBA",
        "RGBX",
        "RGBa",
        "LA",
        "PA",
        "CMYK",
        "YCbCr",
        "HSV",
        "I",
        "F",
        "I;16",
        "I;16B",
        "I;16L",
        "I;16N",
    }
)


def check_image_geometry(width: int, height: int, settings: Settings) -> None:
    """Refuse images whose shape is absurd for any model here (1 x 100000 strips and the like)."""
    side = max(width, height)
    if side > settings.max_image_side:
        raise errors.unprocessable(
            "invalid_image_size",
            f"image of {width}x{height}: the longest side may be at most {settings.max_image_side} pixels",
        )
    if side / max(1, min(width, height)) > settings.max_aspect_ratio:
        raise errors.unprocessable(
            "invalid_image_size",
            f"image of {width}x{height} is too elongated: the aspect ratio may be at "
            f"most {settings.max_aspect_ratio:g}:1",
        )


def normalize_image_mode(img: Image.Image) -> Image.Image:
    """An image whose mode converts cleanly to L/RGB; exotic modes go to RGB now or are refused."""
    if img.mode in _MODES_OK:
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise errors.unprocessable(
            "unsupported_image_mode",
            f"images with pixel mode {img.mode!r} are not supported; send grayscale, RGB or RGBA",
        ) from None


def check_image(img: Image.Image, settings: Settings) -> Image.Image:
    w, h = img.size
    check_image_geometry(w, h, settings)
    return normalize_image_mode(img)


# ---------------------------------------------------------------------------------------------
# Tensors (KServe v2)

KSERVE_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def _invalid(name: str, message: str, code: str = "invalid_tensor") -> errors.APIError:
    return errors.unprocessable(code, f"input {name!r}: {message}")


def check_shape(name: str, shape: Sequence[Any], max_elements: int) -> tuple[int, ...]:
    """Dims as ints >= 0 (bools and floats are not dims); the element count within the limit."""
    if not isinstance(shape, (list, tuple)):
        raise _invalid(name, "shape must be a list of integers", "invalid_shape")
    dims: list[int] = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise _invalid(name, f"shape {list(shape)} must hold integers >= 0", "invalid_shape")
        dims.append(int(d))
    count = math.prod(dims)
    if count > max_elements:
        raise errors.too_large(
            f"input {name!r}: shape {dims} has {count} elements; the limit is {max_elements}"
        )
    return tuple(dims)


def _dtype(name: str, datatype: str) -> np.dtype:
    if datatype not in KSERVE_NUMPY:
        known = ", ".join([*KSERVE_NUMPY, "BYTES"])
        raise _invalid(name, f"unsupported datatype {datatype!r}; one of {known}", "invalid_datatype")
    return KSERVE_NUMPY[datatype]


def check_finite(name: str, arr: np.ndarray) -> np.ndarray:
    """NaN and +-inf are refused in floating-point inputs: no model here is defined on them."""
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise _invalid(name, f"{bad} value(s) are NaN or infinite", "non_finite_tensor")
    return arr


def tensor_from_json(
    name: str, datatype: str, shape: Sequence[Any], data: Any, max_elements: int
) -> np.ndarray:
    """KServe v2 JSON ``data`` (flat or nested, row-major) -> an array of ``shape`` and ``datatype``."""
    dims = check_shape(name, shape, max_elements)
    count = math.prod(dims)
    if datatype == "BYTES":
        flat = list(_flatten(name, data, max_elements))
        if len(flat) != count:
            raise _invalid(
                name, f"{len(flat)} values for shape {list(dims)} ({count} elements)", "shape_mismatch"
            )
        if not all(isinstance(v, str) for v in flat):
            raise _invalid(name, "BYTES data must be strings")
        return np.array([v.encode("utf-8") for v in flat], dtype=object).reshape(dims)
    dtype = _dtype(name, datatype)
    flat = list(_flatten(name, data, max_elements))
    if len(flat) != count:
        raise _invalid(
            name, f"{len(flat)} values for shape {list(dims)} ({count} elements)", "shape_mismatch"
        )
    if dtype.kind == "b":
        if not all(isinstance(v, bool) for v in flat):
            raise _invalid(name, "BOOL data must be true/false")
        return np.array(flat, dtype=dtype).reshape(dims)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in flat):
        raise _invalid(name, f"{datatype} data must be numbers")
    if dtype.kind in "iu":
        if any(isinstance(v, float) and not v.is_integer() for v in flat):
            raise _invalid(name, f"{datatype} data must be integers")
        info = np.iinfo(dtype)
        ints = [int(v) for v in flat]
        if ints and (min(ints) < info.min or max(ints) > info.max):
            raise _invalid(
                name, f"values outside the {datatype} range [{info.min}, {info.max}]", "value_out_of_range"
            )
        return np.array(ints, dtype=dtype).reshape(dims)
    arr = np.array(flat, dtype=np.float64)
    check_finite(name, arr)  # JSON parsers here accept NaN/Infinity literals
    if dtype != np.float64 and arr.size and np.abs(arr).max() > np.finfo(dtype).max:
        raise _invalid(name, f"values overflow {datatype}", "value_out_of_range")
    return arr.astype(dtype).reshape(dims)


def _flatten(name: str, data: Any, limit: int) -> Any:
    """Row-major walk of nested lists, bounded so a huge body cannot blow the stack or memory."""
    stack, seen = [iter([data])], 0
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 32:
                    raise _invalid(name, "data is nested too deeply")
                stack.append(iter(item))
                break
            seen += 1
            if seen > limit:
                raise errors.too_large(f"input {name!r}: more than {limit} values")
            yield item
        else:
            stack.pop()


def tensor_from_raw(
    name: str, datatype: str, shape: Sequence[Any], raw: bytes, max_elements: int
) -> np.ndarray:
    """Binary tensor data (gRPC ``raw_input_contents`` or the HTTP binary extension) -> ndarray."""
    dims = check_shape(name, shape, max_elements)
    count = math.prod(dims)
    if datatype == "BYTES":
        items = parse_bytes_tensor(name, raw, count)
        return np.array(items, dtype=object).reshape(dims)
    dtype = _dtype(name, datatype)
    if len(raw) != count * dtype.itemsize:
        raise _invalid(
            name,
            f"{len(raw)} bytes of data for shape {list(dims)} of {datatype} "
            f"({count * dtype.itemsize} expected)",
            "shape_mismatch",
        )
    arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype).reshape(dims)
    return check_finite(name, arr)


def parse_bytes_tensor(name: str, raw: bytes, count: int) -> list[bytes]:
    """KServe BYTES serialisation (4-byte little-endian length + bytes, repeated), bounds-checked."""
    items: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        if i + 4 > n:
            raise _invalid(name, "truncated BYTES element length", "shape_mismatch")
        size = int.from_bytes(raw[i : i + 4], "little")
        if i + 4 + size > n:
            raise _invalid(name, "a BYTES element runs past the end of the data", "shape_mismatch")
        items.append(raw[i + 4 : i + 4 + size])
        i += 4 + size
        if len(items) > count:
            break
    if len(items) != count:
        raise _invalid(name, f"{len(items)} BYTES elements for {count} expected", "shape_mismatch")
    return items


def check_tensor(
    name: str,
    arr: np.ndarray,
    datatype: str,
    expected_datatype: str,
    expected_dims: Sequence[int],
    batched: bool,
) -> np.ndarray:
    """The tensor fits the model's input: datatype, rank and every fixed dim (-1 = any)."""
    if datatype != expected_datatype:
        raise _invalid(
            name, f"datatype {datatype} given, the model takes {expected_datatype}", "datatype_mismatch"
        )
    want = ([-1] if batched else []) + list(expected_dims)
    got = list(arr.shape)
    if len(got) != len(want) or any(w != -1 and w != g for w, g in zip(want, got, strict=True)):
        raise _invalid(name, f"shape {got} does not match the model's {want} (-1 = any)", "shape_mismatch")
    if batched and got and got[0] == 0:
        raise _invalid(name, "an empty batch", "shape_mismatch")
    return check_finite(name, arr)


# ---------------------------------------------------------------------------------------------
# Text


def decode_utf8(raw: bytes, what: str = "prompt") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.unprocessable("invalid_utf8", f"{what} is not valid UTF-8 (byte {exc.start})") from None


# What check_prompt lets through, for the document (its length bound is max_prompt_chars): no NUL,
# no lone surrogates.
PROMPT_PATTERN = "^[^\\x00\\ud800-\\udfff]*$"


def check_prompt(text: str | bytes, max_chars: int, what: str = "prompt", allow_empty: bool = False) -> str:
    """A prompt that is valid UTF-8, has no NUL bytes and at most ``max_chars`` characters."""
    if isinstance(text, bytes):
        text = decode_utf8(text, what)
    if not text and not allow_empty:
        raise errors.unprocessable("empty_prompt", f"{what} is empty")
    if len(text) > max_chars:
        raise errors.unprocessable(
            "prompt_too_long", f"{what} has {len(text)} characters; the limit is {max_chars}"
        )
    if "\x00" in text:
        raise errors.unprocessable("invalid_prompt", f"{what} contains NUL characters")
    try:  # lone surrogates (from JSON "\ud800" escapes) are not encodable text
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.unprocessable(
            "invalid_utf8", f"{what} contains unpaired surrogate code points"
        ) from None
    return text


def integral_float(value: Any) -> Any:
    """1.0 for 1: JSON Schema's ``integer`` includes integral numbers written with a fraction."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An int field of a strict request model that takes 1.0 as 1 (and still refuses "1" and true).
JsonInt = Annotated[int, BeforeValidator(integral_float)]
# The same, optional (``JsonInt | None`` would drop the field's bounds from the JSON schema).
OptionalJsonInt = Annotated[int | None, BeforeValidator(integral_float)]


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> float:
    """``lo <= value <= hi`` (either bound optional); NaN and inf are always out of range."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    ):
        span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise errors.unprocessable("invalid_parameter", f"{name}={value!r} is outside {span}")
    return value
