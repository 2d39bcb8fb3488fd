"""Classifier: training artefacts, checkpoint format, ONNX contract and parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.onnx_export import ParityError, check_parity
from export.tasks import get_exporter
from training.common import load_checkpoint


def test_checkpoint_loads_with_weights_only(classifier_ckpt: Path) -> None:
    payload = torch.load(classifier_ckpt, weights_only=True)
    assert payload["arch"] == "resnet" and payload["task"] == "classification"
    assert set(payload["meta"]) >= {"labels", "image_size", "channels", "mean", "std"}
    metrics = json.loads((classifier_ckpt.parent / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9
    assert (classifier_ckpt.parent / "training_curve.png").stat().st_size > 1000


def test_export_contract_and_parity(classifier_ckpt: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(classifier_ckpt)
    (entry,) = get_exporter("classification")(ckpt, tmp_path, "clf")
    model = onnx.load(str(entry.files["model.onnx"]))
    (inp,) = model.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert entry.card["parity"]["max_abs_err/probs"] < 1e-4


def test_parity_check_fails_when_the_graph_differs(classifier_ckpt: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(classifier_ckpt)
    (entry,) = get_exporter("classification")(ckpt, tmp_path, "clf")
    from export.tasks.classification import UInt8Classifier

    other = UInt8Classifier(ckpt.model, mean=0.4, std=0.5)  # normalisation differs from the exported graph
    feeds = {"image": np.random.default_rng(1).integers(0, 256, (4, 1, 32, 32), dtype=np.uint8)}
    with pytest.raises(ParityError):
        check_parity(other, entry.files["model.onnx"], feeds, atol=1e-4)
