"""GAN sampling export: "latent" float32 (N, Z) in, "image" uint8 (N, C, S, S) out.

Only the batch axis is dynamic: Z, C and S are the generator's (``latent_dim``, ``channels``,
``image_size`` in the config's parameters, which the gateway reads to draw latents of the right
width). The [-1, 1] -> 0..255 mapping, clamp and rounding live in the graph. The gateway draws
the latents from the request's seed (serving/latent.py), so the same seed gives the same images.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, TensorSpec
from export.repository import RepositoryModel
from export.tasks import register_exporter
from export.tasks.uint8_images import export_with_parity, float_contract
from serving.latent import latents
from training.common import Checkpoint

PIXEL_ATOL = 0.05  # pre-rounding pixels on the 0..255 scale (transposed convs agree to ~1e-3 here)
PIXEL_MAX_DIFF = 1  # served uint8: a value at x.5 may round either way ...
PIXEL_MISMATCH_MAX_FRACTION = 1e-3  # ... on at most 0.1% of the pixels
MAX_BATCH = 16  # the route's n limit: one request is one batch


class UInt8Sampler(nn.Module):
    """(N, Z) float32 -> (N, C, S, S) uint8 (float 0..255 for the parity twin)."""

    def __init__(self, net: nn.Module, float_outputs: bool = False) -> None:
        super().__init__()
        self.net, self.float_outputs = net, float_outputs

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        pixels = ((self.net(latent) + 1.0) * 127.5).clamp(0.0, 255.0)  # same as training.gan_sample.to_uint8
        return pixels if self.float_outputs else pixels.round().to(torch.uint8)


@register_exporter("sampling")
def export_sampler(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta = ckpt.meta
    z, c, s = int(meta["latent_dim"]), int(meta["channels"]), int(meta["image_size"])
    contract = OnnxContract(
        inputs=[TensorSpec("latent", "float32", [-1, z], {0: "batch"})],
        outputs=[TensorSpec("image", "uint8", [-1, c, s, s], {0: "batch"})],
    )
    feeds = [{"latent": latents(seed, n, z)} for seed, n in ((0, 3), (1, MAX_BATCH))]
    parity = export_with_parity(
        lambda f: UInt8Sampler(ckpt.model, f),
        (torch.from_numpy(latents(2, 2, z)),),
        contract,
        float_contract(contract),
        workdir / "model.onnx",
        feeds,
        float_atol={"image": PIXEL_ATOL},
        max_abs=PIXEL_MAX_DIFF,
        max_fraction=PIXEL_MISMATCH_MAX_FRACTION,
    )
    return [
        RepositoryModel(
            name=name,
            task="sampling",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": workdir / "model.onnx"},
            max_batch_size=MAX_BATCH,
            # Issue 18: one stub less (~68 MB RSS each, mostly the interpreter, numpy and onnxruntime).
            # A small net, so one instance with two onnxruntime threads, as the classifier (make tune
            # measured 1 x 2 ~10% ahead of 2 x 1 for it at concurrency 32).
            cpu_instances=1,
            cpu_threads=2,
            parameters={
                "latent_dim": str(z),
                "channels": str(c),
                "image_size": str(s),
                "max_samples": str(MAX_BATCH),
                "arch": ckpt.arch,
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
