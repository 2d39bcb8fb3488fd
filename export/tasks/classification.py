"""Classifier export: uint8 image in, class probabilities out; normalisation inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, TensorSpec, check_parity, export_onnx
from export.repository import RepositoryModel
from export.tasks import register_exporter
from export.tasks.uint8_images import canonical_parameters, invariances
from training.common import Checkpoint

PARITY_ATOL = 1e-4  # on softmax probabilities (float32 graph vs float32 eager)


class UInt8Classifier(nn.Module):
    """(N, C, H, W) uint8 -> (N, classes) float32 probabilities."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() * self.scale - self.shift  # == (x/255 - mean) / std
        return torch.softmax(self.net(x), dim=1)


@register_exporter("classification")
def export_classifier(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    c, s = int(meta["channels"]), int(meta["image_size"])
    labels = list(meta["labels"])
    wrapper = UInt8Classifier(ckpt.model, float(meta["mean"]), float(meta["std"])).eval()
    contract = OnnxContract(
        inputs=[TensorSpec("image", "uint8", [-1, c, s, s])],
        outputs=[TensorSpec("probs", "float32", [-1, len(labels)])],
    )
    path = export_onnx(
        wrapper, (torch.zeros(2, c, s, s, dtype=torch.uint8),), contract, workdir / "model.onnx"
    )
    rng = np.random.default_rng(0)
    feeds = {"image": rng.integers(0, 256, size=(5, c, s, s), dtype=np.uint8)}
    parity = check_parity(wrapper, path, feeds, atol=PARITY_ATOL)
    return [
        RepositoryModel(
            name=name,
            task="classification",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": path},
            labels=labels,
            # `make tune` on 2 cores: for this small net one instance with two onnxruntime threads beat
            # two single-threaded instances by ~10% at concurrency 32 (bigger batches amortise the
            # Python-backend hop); compute-heavy models keep the 2 x 1 default.
            cpu_instances=1,
            cpu_threads=2,
            parameters={
                "image_size": str(s),
                "channels": str(c),
                "arch": ckpt.arch,
                **canonical_parameters(meta),
            },
            card={
                "arch": ckpt.arch,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "invariances": invariances(meta),
                "parity": parity,
                "config": ckpt.config,
            },
        )
    ]
