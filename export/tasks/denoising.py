"""Denoising export: uint8 image (N, C, H, W) in, uint8 (N, C, H, W) out; clamp and round in the graph.

H and W are dynamic (the autoencoder is fully convolutional). ``tile_size`` / ``tile_margin``
tell the gateway how to cut big images: ``tile_margin`` is the network's receptive-field radius,
so overlapping tiles stitch to the untiled result (serving/gateway/tiling.py, shared with
super-resolution; ``scale`` is 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.onnx_export import OnnxContract, TensorSpec
from export.repository import RepositoryModel
from export.tasks import register_exporter
from export.tasks.super_resolution import UInt8SuperResolver
from export.tasks.uint8_images import (
    IMAGE_AXES,
    export_with_parity,
    float_contract,
    memory_parameters,
    sample_images,
)
from training.common import Checkpoint
from training.models.denoiser import receptive_radius

PIXEL_ATOL = 0.05  # pre-rounding pixels on the 0..255 scale
PIXEL_MAX_DIFF = 1  # served uint8: a value at x.5 may round either way ...
PIXEL_MISMATCH_MAX_FRACTION = 1e-3  # ... on at most 0.1% of the pixels
SUGGESTED_TILE = 256  # pixels per side: same-size output, so 4x the super-resolution x2 tile's input


@register_exporter("denoising")
def export_denoiser(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    c = int(meta["channels"])
    contract = OnnxContract(
        inputs=[TensorSpec("image", "uint8", [-1, c, -1, -1], dict(IMAGE_AXES))],
        outputs=[TensorSpec("image_denoised", "uint8", [-1, c, -1, -1], dict(IMAGE_AXES))],
    )
    rng = np.random.default_rng(0)
    feeds = [{"image": sample_images(rng, (2, c, 24, 24))}, {"image": sample_images(rng, (1, c, 17, 41))}]
    parity = export_with_parity(
        lambda f: UInt8SuperResolver(ckpt.model, float(meta["mean"]), float(meta["std"]), f),
        (torch.zeros(1, c, 16, 16, dtype=torch.uint8),),
        contract,
        float_contract(contract),
        workdir / "model.onnx",
        feeds,
        float_atol={"image_denoised": PIXEL_ATOL},
        max_abs=PIXEL_MAX_DIFF,
        max_fraction=PIXEL_MISMATCH_MAX_FRACTION,
    )
    return [
        RepositoryModel(
            name=name,
            task="denoising",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": workdir / "model.onnx"},
            max_batch_size=8,
            parameters={
                "scale": "1",
                "channels": str(c),
                "tile_size": str(SUGGESTED_TILE),
                "tile_margin": str(receptive_radius(ckpt.config)),
                "arch": ckpt.arch,
                **memory_parameters(workdir / "model.onnx", "image", c),
            },
            card={
                "arch": ckpt.arch,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "parity": parity,
                "config": ckpt.config,
            },
        )
    ]
