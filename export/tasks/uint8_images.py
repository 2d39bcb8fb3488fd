"""Shared by the image-to-image exporters: uint8 in/out helpers and a parity check that suits them.

A served graph that ends in ``round`` or ``argmax`` turns a 1e-6 float difference into a whole
unit now and then (a value at x.5, two nearly tied logits). So parity is checked twice:

1. the same wrapper with ``float_outputs=True`` (everything but the final rounding/argmax) is
   exported and compared with ``check_parity`` at a float tolerance: that is the real check;
2. the served graph's uint8 outputs are compared with PyTorch's, allowing at most
   ``max_abs`` per element (None: any size) on at most ``max_fraction`` of the elements.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, ParityError, TensorSpec, check_parity, export_onnx, ort_session

IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}  # (N, C, H, W): the only dynamic axes of an image


def normalise(image: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float, == (x/255 - mean) / std, folded into one multiply-add."""
    return image.float() * (1.0 / (255.0 * std)) - mean / std


def to_pixels(y: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Model-space float -> pixel values in [0, 255] (float, before rounding)."""
    return ((y * std + mean) * 255.0).clamp(0.0, 255.0)


def float_contract(
    contract: OnnxContract, shapes: dict[str, tuple[list[int], dict[int, str]]] | None = None
) -> OnnxContract:
    """The contract of the ``float_outputs`` twin: same names, float32 outputs (optionally other shapes)."""
    shapes = shapes or {}
    outputs = []
    for t in contract.outputs:
        shape, dynamic = shapes.get(t.name, (list(t.shape), dict(t.dynamic)))
        outputs.append(TensorSpec(t.name, "float32", shape, dynamic))
    return OnnxContract(contract.inputs, outputs, contract.batched)


def export_with_parity(
    make: Callable[[bool], nn.Module],
    example: tuple[torch.Tensor, ...],
    contract: OnnxContract,
    twin_contract: OnnxContract,
    path: Path,
    feeds: list[dict[str, np.ndarray]],
    float_atol: dict[str, float],
    max_abs: int | None,
    max_fraction: float,
) -> dict[str, Any]:
    """Export ``make(False)`` to ``path`` under ``contract``; verify it as described in the module docstring.

    ``float_atol`` holds one absolute tolerance per output name (outputs live on different scales).
    ``feeds`` is a list so that several input sizes exercise the dynamic axes. Returns the report
    for the model card; raises ParityError beyond the tolerances.
    """
    twin = make(True).eval()
    twin_path = export_onnx(twin, example, twin_contract, path.parent / "parity" / "float_outputs.onnx")
    twin_reports = [check_parity(twin, twin_path, f, atol=max(float_atol.values())) for f in feeds]
    for rep in twin_reports:  # check_parity takes one atol: hold each output to its own
        for name, atol in float_atol.items():
            if rep[f"max_abs_err/{name}"] > atol:
                raise ParityError(
                    f"output {name!r} (before rounding): max |onnx - torch| = "
                    f"{rep[f'max_abs_err/{name}']:.3g} > {atol}"
                )
    report: dict[str, Any] = {
        "float_atol": float_atol,
        "uint8_max_abs": max_abs,
        "uint8_max_fraction": max_fraction,
        "float_outputs": twin_reports,
    }
    served = make(False).eval()
    export_onnx(served, example, contract, path)
    sess = ort_session(path)
    names = [t.name for t in contract.outputs]
    worst: dict[str, float] = {}
    for f in feeds:
        got = sess.run(names, f)
        with torch.no_grad():
            ref = served(*[torch.from_numpy(v) for v in f.values()])
        ref_list = list(ref) if isinstance(ref, (tuple, list)) else [ref]
        for spec, r, g in zip(contract.outputs, ref_list, got, strict=True):
            r_np = r.numpy()
            if r_np.shape != g.shape:
                raise ParityError(
                    f"output {spec.name!r}: onnxruntime shape {g.shape} != PyTorch {r_np.shape}"
                )
            diff = np.abs(r_np.astype(np.float64) - g.astype(np.float64))
            if spec.dtype == "uint8":
                frac = float((diff > 0).mean())
                if (max_abs is not None and diff.max(initial=0) > max_abs) or frac > max_fraction:
                    raise ParityError(
                        f"output {spec.name!r}: {frac:.2%} of elements differ, max {diff.max():.0f} "
                        f"(allowed: {max_fraction:.2%}, max {max_abs})"
                    )
                worst[f"mismatch_fraction/{spec.name}"] = max(
                    worst.get(f"mismatch_fraction/{spec.name}", 0.0), frac
                )
            else:
                if diff.max(initial=0) > float_atol[spec.name]:
                    raise ParityError(
                        f"output {spec.name!r}: max |onnx - torch| = {diff.max():.3g} "
                        f"> {float_atol[spec.name]}"
                    )
                worst[f"max_abs_err/{spec.name}"] = max(
                    worst.get(f"max_abs_err/{spec.name}", 0.0), float(diff.max())
                )
    report["served_outputs"] = worst
    return report


def sample_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images with flat regions, edges and noise: closer to photos than pure noise, cheap to make."""
    n, c, h, w = shape
    blocks = rng.integers(0, 256, size=(n, c, max(h // 8, 1), max(w // 8, 1)))
    img = np.repeat(np.repeat(blocks, 8, axis=2), 8, axis=3)[:, :, :h, :w]
    img = np.pad(img, ((0, 0), (0, 0), (0, h - img.shape[2]), (0, w - img.shape[3])), mode="edge")
    return np.clip(img + rng.normal(0, 12, size=img.shape), 0, 255).astype(np.uint8)


def canonical_parameters(meta: dict[str, Any]) -> dict[str, str]:
    """The preprocessing parameters the gateway reads (serving.imaging.to_model_image's
    ``canonicalize`` and ``native_size``), when the recipe trained through them."""
    params: dict[str, str] = {}
    if meta.get("canonicalize", "none") != "none":
        params["canonicalize"] = str(meta["canonicalize"])
        if meta.get("native_size"):
            params["native_size"] = str(int(meta["native_size"]))
    return params


def invariances(meta: dict[str, Any]) -> dict[str, str] | None:
    """Where each input invariance of an image model lives, for the model card."""
    if meta.get("canonicalize", "none") == "none":
        return None
    return {
        "size, aspect ratio, margins, small shifts": (
            "by design: serving.imaging canonical_document crops to the ink, pads to a centred square "
            f"and area-averages to the native {meta.get('native_size')}x{meta.get('native_size')} grid, "
            "at training and in the gateway (model parameters canonicalize, native_size)"
        ),
        "nearest-neighbour (blocky) upscales": "by design: exact block structure detected and undone",
        "polarity (light ink on dark)": "by design: inverted to dark-on-light, decided from the border",
        "rotation up to 10 degrees, blur, noise, JPEG, shifts that crop": (
            f"training-time augmentation ({meta.get('augmentation', 'training.data.perturb.augment')})"
        ),
        "grey, RGB, RGBA, palette, 16-bit, CMYK, EXIF orientation": (
            "decoding and mode conversion (serving.imaging.to_mode, gateway codecs)"
        ),
    }


# One Triton call of a variable-size image model may plan at most this much for its activations
# (the Python-backend runner slices bigger dynamic batches and refuses a single bigger row); the
# gateway's `max_call_bytes` setting sizes its tile batches under min(setting, this).
MAX_CALL_BYTES = 512 * 1024 * 1024


def memory_parameters(onnx_path: Path, input_name: str, channels: int) -> dict[str, str]:
    """The memory facts a variable-size image model states in its config (issue 18)."""
    from export.memory import image_bytes_per_pixel

    return {
        "bytes_per_pixel": str(image_bytes_per_pixel(onnx_path, input_name, channels)),
        "max_call_bytes": str(MAX_CALL_BYTES),
    }
