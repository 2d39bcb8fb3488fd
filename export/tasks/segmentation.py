"""Segmenter export: uint8 image (N, C, H, W) in, uint8 class mask (N, H, W) out; argmax in the graph.

H and W are dynamic (the U-Net is fully convolutional) but must be multiples of the model's
``multiple_of``, which goes into the config's parameters so the gateway can pad to it.
"""

from __future__ import annotations

import json
from pathlib import Path

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
)
from training.common import Checkpoint

LOGIT_ATOL = 1e-3  # float32 logits, graph vs eager (observed ~1e-5)
MASK_MISMATCH_MAX_FRACTION = (
    1e-3  # argmax may flip where two logits tie to ~1e-6; nowhere near 0.1% of pixels
)


class UInt8Segmenter(nn.Module):
    """(N, C, H, W) uint8 -> (N, H, W) uint8 class ids, or (N, K, H, W) float logits for the parity twin."""

    def __init__(self, net: nn.Module, mean: float, std: float, float_outputs: bool = False) -> None:
        super().__init__()
        self.net, self.mean, self.std, self.float_outputs = net, mean, std, float_outputs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.net(normalise(image, self.mean, self.std))
        if self.float_outputs:
            return logits
        return logits.argmax(1).to(torch.uint8)


@register_exporter("segmentation")
def export_segmenter(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    c, m, s = int(meta["channels"]), int(meta["multiple_of"]), int(meta["image_size"])
    classes = list(meta["classes"])
    contract = OnnxContract(
        inputs=[TensorSpec("image", "uint8", [-1, c, -1, -1], dict(IMAGE_AXES))],
        outputs=[TensorSpec("mask", "uint8", [-1, -1, -1], {0: "batch", 1: "height", 2: "width"})],
    )
    twin = float_contract(contract, {"mask": ([-1, len(classes), -1, -1], dict(IMAGE_AXES))})
    rng = np.random.default_rng(0)
    feeds = [{"image": sample_images(rng, (3, c, s, s))}, {"image": sample_images(rng, (1, c, 2 * m, 5 * m))}]
    parity = export_with_parity(
        lambda f: UInt8Segmenter(ckpt.model, float(meta["mean"]), float(meta["std"]), f),
        (torch.zeros(2, c, s, s, dtype=torch.uint8),),
        contract,
        twin,
        workdir / "model.onnx",
        feeds,
        float_atol={"mask": LOGIT_ATOL},
        max_abs=None,
        max_fraction=MASK_MISMATCH_MAX_FRACTION,
    )
    return [
        RepositoryModel(
            name=name,
            task="segmentation",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": workdir / "model.onnx"},
            max_batch_size=16,
            parameters={
                "classes": json.dumps(classes),
                "palette": json.dumps([list(p) for p in meta["palette"]]),
                "channels": str(c),
                "multiple_of": str(m),
                "image_size": str(s),
                "arch": ckpt.arch,
                **memory_parameters(workdir / "model.onnx", "image", c),
            },
            card={
                "arch": ckpt.arch,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "parity": parity,
                "config": ckpt.config,
                "input": f"uint8 RGB, H and W multiples of {m}; trained on {s}x{s} scenes",
            },
        )
    ]
