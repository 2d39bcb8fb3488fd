"""GAN sampling: DCGAN shapes, seeded latents, recipe artefacts and judge baselines, export contract.

Uses the session's cached tiny checkpoint (tests/support/models.py), so no extra training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.onnx_export import ort_session
from export.repository import validate_config_text
from serving.imaging import grid
from serving.latent import latents
from tests.support import models
from training.models import build_model


@pytest.fixture(scope="module")
def sampler() -> Path:
    return models.sampler_checkpoint().parent


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_generator_and_discriminator_shapes(size: int) -> None:
    g = build_model("dcgan_generator", {"image_size": size, "latent_dim": 8, "width": 4}).eval()
    d = build_model("dcgan_discriminator", {"image_size": size, "width": 4}).eval()
    with torch.no_grad():
        img = g(torch.randn(5, 8))
        assert img.shape == (5, 1, size, size) and img.abs().max() <= 1.0  # tanh output
        assert d(img).shape == (5,)


@pytest.mark.parametrize("size", [4, 12, 48])
def test_sizes_that_are_not_4_times_a_power_of_two_are_refused(size: int) -> None:
    with pytest.raises(ValueError):
        build_model("dcgan_generator", {"image_size": size})


def test_latents_are_seeded_and_prefix_stable() -> None:
    a = latents(7, 16, 32)
    assert a.dtype == np.float32 and a.shape == (16, 32)
    assert np.array_equal(a, latents(7, 16, 32)) and np.array_equal(a[:3], latents(7, 3, 32))
    assert not np.array_equal(a, latents(8, 16, 32))


def test_grid_layout() -> None:
    imgs = np.stack([np.full((1, 3, 2), i, np.uint8) for i in range(5)])  # 5 images of 3x2
    sheet = grid(imgs, pad=1)  # 3 columns, 2 rows
    assert sheet.shape == (1, 2 * 4 + 1, 3 * 3 + 1)
    assert sheet[0, 1, 1] == 0 and sheet[0, 1, 4] == 1 and sheet[0, 5, 4] == 4 and sheet[0, 5, 7] == 255


def test_nn_distance_and_judge_report() -> None:
    from training.gan_sample import judge_report, nn_distance

    train = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    assert np.allclose(nn_distance(train[:4], train), 0.0, atol=1e-6)  # a copy is at distance 0
    assert (nn_distance(255 - train[:4], train) > 0.1).all()
    probs = np.array([[0.95, 0.05], [0.2, 0.8], [0.05, 0.95], [0.5, 0.5]])
    rep = judge_report(probs)
    assert rep["confident"] == 0.5 and rep["class_histogram"] == [1, 1] and rep["coverage"] == 1.0


def test_sampler_artefacts(sampler: Path) -> None:
    p = torch.load(sampler / "model.pt", map_location="cpu", weights_only=True)
    assert p["task"] == "sampling" and p["arch"] == "dcgan_generator"
    assert p["meta"]["image_size"] == 32 and p["meta"]["latent_dim"] == p["config"]["latent_dim"]
    judge = torch.load(sampler / "judge.pt", map_location="cpu", weights_only=True)
    assert judge["arch"] == "lenet5" and judge["task"] == "classification"
    report = json.loads((sampler / "metrics.json").read_text())["eval"]
    assert set(report) == {"gan", "noise", "blurred_real", "real_held_out", "memorisation"}
    for row in (report[k] for k in ("gan", "noise", "blurred_real", "real_held_out")):
        assert 0.0 <= row["confident"] <= 1.0 and 0.0 <= row["coverage"] <= 1.0 and row["nn_distance"] >= 0
    # real held-out digits sit closer to the training set than uniform noise does
    assert report["real_held_out"]["nn_distance"] < report["noise"]["nn_distance"]
    for png in ("training_curve.png", "samples.png"):
        assert (sampler / png).stat().st_size > 1000


def test_sampler_export_contract_and_parity(sampler: Path, tmp_path: Path) -> None:
    from training.common import load_checkpoint
    from training.gan_sample import sample

    repo = tmp_path / "repo"
    assert export_main(["--checkpoint", f"{sampler / 'model.pt'}:sampler", "--repository", str(repo)]) == 0
    cfg = validate_config_text((repo / "cpu" / "sampler" / "config.pbtxt").read_text(), expect_name="sampler")
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    ckpt = load_checkpoint(sampler / "model.pt")
    z = int(ckpt.meta["latent_dim"])
    assert params["task"] == "sampling" and int(params["latent_dim"]) == z and cfg.max_batch_size == 16
    path = repo / "gpu" / "sampler" / "1" / "model.onnx"
    graph = onnx.load(str(path)).graph
    dims = [
        [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
        for t in (*graph.input, *graph.output)
    ]
    assert dims == [["batch", z], ["batch", 1, 32, 32]]
    assert [t.name for t in graph.input] == ["latent"] and [t.name for t in graph.output] == ["image"]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    zs = latents(3, 7, z)
    (served,) = ort_session(path).run(["image"], {"latent": zs})
    assert np.abs(served.astype(np.int16) - sample(ckpt.model, zs)).max() <= 1
