"""Super-resolution export: uint8 image (N, C, h, w) in, uint8 (N, C, s*h, s*w) out; clamp and round in
the graph.

One checkpoint per served model: the recipe writes ``<out>/sr_psnr_x<s>/model.pt`` and
``<out>/sr_gan_x<s>/model.pt`` (meta ``variant`` "psnr" / "gan"), so the served name defaults to
the folder name. h and w are dynamic; ``tile_size`` / ``tile_margin`` (LR pixels) tell a client how
to cut big images so memory stays bounded and seams stay invisible: ``tile_margin`` is the
generator's receptive-field radius, so tiles that overlap by twice it stitch to exactly the
untiled result (serving/gateway/tiling.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, TensorSpec
from export.repository import RepositoryModel
from export.tasks import register_exporter
from export.tasks.uint8_images import (
    IMAGE_AXES,
    export_with_parity,
    float_contract,
    memory_parameters,
    normalise,
    sample_images,
    to_pixels,
)
from training.common import Checkpoint

PIXEL_ATOL = 0.05  # pre-rounding pixels on the 0..255 scale (observed ~1e-3): the real parity check
PIXEL_MAX_DIFF = 1  # served uint8: a value at x.5 may round either way ...
PIXEL_MISMATCH_MAX_FRACTION = 1e-3  # ... on at most 0.1% of the pixels
SUGGESTED_TILE = 128  # LR pixels per side: ~1 s and < 0.5 GB per tile for the full-size generator on CPU


class UInt8SuperResolver(nn.Module):
    """(N, C, h, w) uint8 -> (N, C, s*h, s*w) uint8 (or float pixels before rounding, for the parity twin)."""

    def __init__(self, net: nn.Module, mean: float, std: float, float_outputs: bool = False) -> None:
        super().__init__()
        self.net, self.mean, self.std, self.float_outputs = net, mean, std, float_outputs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = to_pixels(self.net(normalise(image, self.mean, self.std)), self.mean, self.std)
        return pixels if self.float_outputs else pixels.round().to(torch.uint8)


def receptive_radius(config: dict[str, Any]) -> int:
    """LR pixels on each side that influence an output pixel: the margin tiles need."""
    k, scale = int(config["head_kernel"]), int(config["scale"])
    steps = int(round(math.log2(scale)))
    lr_convs = k // 2 + 2 * int(config["num_blocks"]) + 1  # head, two 3x3 per block, body end
    up_convs = sum(1 / 2**i for i in range(steps))  # one 3x3 per upsampling step, at 2^i x resolution
    tail = (k // 2) / scale
    bicubic = 2 if config.get("bicubic_skip", True) else 0
    return int(math.ceil(lr_convs + up_convs + tail + bicubic))


@register_exporter("super_resolution")
def export_super_resolver(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    c, scale, variant = int(meta["channels"]), int(meta["scale"]), str(meta["variant"])
    contract = OnnxContract(
        inputs=[TensorSpec("image", "uint8", [-1, c, -1, -1], dict(IMAGE_AXES))],
        outputs=[
            TensorSpec("image_sr", "uint8", [-1, c, -1, -1], {0: "batch", 2: "height_sr", 3: "width_sr"})
        ],
    )
    rng = np.random.default_rng(0)
    feeds = [{"image": sample_images(rng, (2, c, 24, 24))}, {"image": sample_images(rng, (1, c, 17, 40))}]
    parity = export_with_parity(
        lambda f: UInt8SuperResolver(ckpt.model, float(meta["mean"]), float(meta["std"]), f),
        (torch.zeros(1, c, 16, 16, dtype=torch.uint8),),
        contract,
        float_contract(contract),
        workdir / "model.onnx",
        feeds,
        float_atol={"image_sr": PIXEL_ATOL},
        max_abs=PIXEL_MAX_DIFF,
        max_fraction=PIXEL_MISMATCH_MAX_FRACTION,
    )
    margin = receptive_radius(ckpt.config)
    return [
        RepositoryModel(
            name=name,
            task="super_resolution",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": workdir / "model.onnx"},
            max_batch_size=8,
            parameters={
                "scale": str(scale),
                "variant": variant,
                "channels": str(c),
                "tile_size": str(SUGGESTED_TILE),
                "tile_margin": str(margin),
                "arch": ckpt.arch,
                **memory_parameters(workdir / "model.onnx", "image", c),
            },
            card={
                "arch": ckpt.arch,
                "variant": variant,
                "scale": scale,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "parity": parity,
                "config": ckpt.config,
            },
        )
    ]
