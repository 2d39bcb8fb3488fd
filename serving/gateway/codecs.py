"""Bytes in, arrays out (and back): request bodies, image decoding with limits, image encoding.

Every refusal is a clear 4xx: too big (413), not an image we read (415), broken or absurd (422).
The pixel limit is checked from the header, before any decoding, so a decompression bomb
costs us a few hundred bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from serving.gateway import errors, validation
from serving.gateway.settings import Settings

# Magic numbers -> Pillow format name. We decide by content, never by the declared type.
_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
]
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff")
_DECODE_IN_THREAD_BYTES = 256 * 1024  # small images decode faster inline than a thread hop costs

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit from the header, per settings


def sniff_format(data: bytes) -> str | None:
    for magic, offset, fmt in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    return None


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refusing early (Content-Length) or while streaming when it grows too large."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.too_large(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.too_large(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_image_bytes(request: Request, settings: Settings, field: str = "file") -> bytes:
    """The uploaded image: a multipart form field ``file``, or the raw body with an image/* type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > settings.max_upload_bytes + 64 * 1024
        ):
            raise errors.too_large(
                f"upload of {int(declared)} bytes exceeds the limit of {settings.max_upload_bytes} bytes"
            )
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # malformed multipart bodies raise several starlette/multipart errors
            raise errors.bad_request(
                "malformed_multipart", f"could not parse the multipart body: {exc}"
            ) from None
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise errors.unprocessable(
                "missing_file", f"send the image as a multipart file field named {field!r}"
            )
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise errors.too_large(f"image exceeds the limit of {settings.max_upload_bytes} bytes")
        return data
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await read_body(request, settings)
    raise errors.unsupported_media(
        f"unsupported content type {ctype or '(none)'!r}: upload the image as multipart/form-data "
        f"(curl -F file=@img.png) or as a raw body with Content-Type image/png or image/jpeg"
    )


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise errors.unprocessable("empty_image", "the uploaded file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise errors.unsupported_media("the upload is not a PNG, JPEG, WebP, GIF, BMP or TIFF image")
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Exception:
        raise errors.unprocessable(
            "corrupt_image", f"the {fmt} image could not be read: corrupt or truncated"
        ) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise errors.unprocessable("invalid_image", f"image has an invalid size {w}x{h}")
    if w * h > max_pixels:
        raise errors.too_large(f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a truncated-file or bomb warning is a refusal, not a hint
            img.load()
    except errors.APIError:
        raise
    except Exception:
        raise errors.unprocessable(
            "corrupt_image", f"the {fmt} image could not be decoded: corrupt or truncated"
        ) from None
    try:  # a camera's EXIF orientation: the pixels as the viewer shows them
        if img.getexif().get(0x0112, 1) != 1:  # 0x0112 = Orientation; 1 = as stored
            return ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block is not worth a refusal: keep the stored orientation
        pass
    return img


async def decode_image(data: bytes, settings: Settings) -> Image.Image:
    if len(data) > _DECODE_IN_THREAD_BYTES:
        img = await run_in_threadpool(_decode, data, settings.max_image_pixels)
    else:
        img = _decode(data, settings.max_image_pixels)
    return validation.check_image(img, settings)  # absurd geometry, exotic pixel modes -> 422


def encode_png(arr_hwc_or_hw: np.ndarray, palette: list[int] | None = None) -> bytes:
    img = Image.fromarray(arr_hwc_or_hw)
    if palette is not None:
        img = img.convert("P") if img.mode != "P" else img
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # level 1: ~5x faster than default, ~10% larger
    return buf.getvalue()


async def image_from_request(request: Request, settings: Settings) -> Image.Image:
    """Read, size-check and decode the uploaded image of an image route."""
    return await decode_image(await read_image_bytes(request, settings), settings)


def png_response_headers(model: str, version: str) -> dict[str, str]:
    return {"X-Model": model, "X-Model-Version": version}
