"""Text-encoder export (BERT, issue 14): token ids + attention mask in, genre probabilities and a pooled,
L2-normalised embedding out, one plain ONNX graph (the generic ``onnx_runner`` on the cpu target,
onnxruntime natively on the gpu target).

* inputs ``tokens`` (N, T) int64 (``[CLS]`` first, then ``char_offset`` + character id, ``[PAD]`` on the
  right) and ``attention_mask`` (N, T) int64 (1 = token); N and T dynamic, T <= ``max_len``;
* outputs ``probs`` (N, labels) float32 (softmax) and ``embedding`` (N, d_model) float32, unit length.

The gateway (``serving/gateway/textenc.py``) tokenises with the vocabulary stored in the parameters
and pads every request to ``max_len``, so concurrent requests share Triton's dynamic batches.

Parity: ``check_parity`` against PyTorch on padded rows of mixed lengths at ``PARITY_ATOL`` (both
outputs), recorded in the model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from export.onnx_export import OnnxContract, TensorSpec, check_parity, export_onnx
from export.repository import RepositoryModel
from export.tasks import register_exporter
from training.common import Checkpoint

TASK = "text_classification"
PARITY_ATOL = 1e-4  # probabilities and embedding components, float32 graph vs float32 eager
MAX_INPUTS = 64  # embeddings inputs per request (413 above); also Triton's max batch


class ServedEncoder(nn.Module):
    def __init__(self, net: Any) -> None:  # the recipe's Bert: ``served`` is what ONNX records
        super().__init__()
        self.net = net

    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.served(tokens, attention_mask)


def contract(labels: int, dim: int) -> OnnxContract:
    seq = {0: "batch", 1: "tokens"}
    return OnnxContract(
        inputs=[
            TensorSpec("tokens", "int64", [-1, -1], dict(seq)),
            TensorSpec("attention_mask", "int64", [-1, -1], dict(seq)),
        ],
        outputs=[
            TensorSpec("probs", "float32", [-1, labels], {0: "batch"}),
            TensorSpec("embedding", "float32", [-1, dim], {0: "batch"}),
        ],
    )


def parity_feeds(cfg: dict, offset: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four rows of mixed lengths padded to ``max_len`` (as the gateway sends them)."""
    t, pad, cls = int(cfg["max_len"]), int(cfg["pad_id"]), 1
    tokens = rng.integers(offset, int(cfg["vocab_size"]), (4, t)).astype(np.int64)
    tokens[:, 0] = cls
    mask = np.ones((4, t), dtype=np.int64)
    for row, n in enumerate((t, t // 2, 3, 1)):
        tokens[row, n:] = pad
        mask[row, n:] = 0
    return {"tokens": tokens, "attention_mask": mask}


@register_exporter(TASK)
def export_text_encoder(ckpt: Checkpoint, workdir: Path, name: str) -> list[RepositoryModel]:
    meta, cfg = ckpt.meta, ckpt.config
    labels = list(meta["labels"])
    dim, max_len = int(cfg["d_model"]), int(cfg["max_len"])
    wrapper = ServedEncoder(ckpt.model).eval()
    spec = contract(len(labels), dim)
    example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    path = export_onnx(wrapper, example, spec, workdir / "model.onnx")
    parity = check_parity(
        wrapper, path, parity_feeds(cfg, int(meta["char_offset"]), np.random.default_rng(0)), atol=PARITY_ATOL
    )
    return [
        RepositoryModel(
            name=name,
            task=TASK,
            inputs=spec.inputs,
            outputs=spec.outputs,
            files={"model.onnx": path},
            labels=labels,
            max_batch_size=MAX_INPUTS,
            parameters={
                "arch": ckpt.arch,
                "vocab": json.dumps(meta["vocab"]),
                "specials": json.dumps(meta["specials"]),
                "char_offset": str(int(meta["char_offset"])),
                "pad_id": str(int(cfg["pad_id"])),
                "max_len": str(max_len),
                "max_chars": str(max_len - 1),
                "embedding_dim": str(dim),
                "max_inputs": str(MAX_INPUTS),
            },
            card={
                "arch": ckpt.arch,
                "metrics": meta.get("metrics", {}),
                "dataset": meta.get("dataset"),
                "parity": parity,
                "config": cfg,
                "inputs": "tokens: [CLS] + char_offset + character id, [PAD] right; characters outside "
                "the vocabulary map to its fallback (a space)",
            },
        )
    ]
