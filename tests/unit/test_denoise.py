"""Denoising autoencoder: recipe artefacts, export contract, receptive field, baselines.

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
from export.repository import validate_config_text
from tests.support import models
from training.models import build_model
from training.models.denoiser import DenoiserConfig, receptive_radius


@pytest.fixture(scope="module")
def denoiser() -> Path:
    return models.denoiser_checkpoint().parent


def test_denoise_artefacts(denoiser: Path) -> None:
    from training.denoise import EVAL_SIGMAS

    p = torch.load(denoiser / "model.pt", map_location="cpu", weights_only=True)
    assert p["task"] == "denoising" and p["arch"] == "denoiser" and p["meta"]["channels"] == 3
    report = json.loads((denoiser / "metrics.json").read_text())["eval"]
    assert set(report) == {f"sigma_{s:g}" for s in EVAL_SIGMAS}
    for row in report.values():
        assert set(row) >= {"noisy", "median", "autoencoder", "psnr_gain_over_median_db"}
        assert row["median"]["size"] in (3, 5) and np.isfinite(row["autoencoder"]["psnr"])
    for png in ("training_curve.png", "denoise_comparison.png"):
        assert (denoiser / png).stat().st_size > 1000


def test_denoise_export_contract(denoiser: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export_main(["--checkpoint", f"{denoiser / 'model.pt'}:denoiser", "--repository", str(repo)]) == 0
    cfg = validate_config_text(
        (repo / "cpu" / "denoiser" / "config.pbtxt").read_text(), expect_name="denoiser"
    )
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["task"] == "denoising" and params["scale"] == "1" and int(params["tile_margin"]) > 0
    graph = onnx.load(str(repo / "gpu" / "denoiser" / "1" / "model.onnx")).graph
    dims = [
        [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
        for t in (*graph.input, *graph.output)
    ]
    assert dims == [["batch", 3, "height", "width"]] * 2
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("widths", [(8, 16), (8, 16, 24)])
def test_tile_margin_covers_the_receptive_field(widths: tuple[int, ...]) -> None:
    cfg = DenoiserConfig(widths=widths)
    torch.manual_seed(0)
    model = build_model("denoiser", cfg).eval()
    x = torch.full((1, 3, 97, 97), 0.5, requires_grad=True)
    model(x)[0, :, 48, 48].sum().backward()  # mid-grey input: the output clamp passes gradients
    ys, xs = np.nonzero(x.grad[0].abs().sum(0).numpy())
    reach = int(max(np.abs(ys - 48).max(), np.abs(xs - 48).max()))
    assert reach <= receptive_radius(cfg) <= reach + 4  # safe, and not wastefully loose


def test_noise_and_median_baseline_behave() -> None:
    from training.denoise import add_noise, median_filter

    flat = np.full((32, 32, 3), 128, np.uint8)
    noisy = add_noise(flat, 25.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and 20 < noisy.astype(float).std() < 30
    assert median_filter(noisy, 3).astype(float).std() < noisy.astype(float).std() / 2
    per_item = add_noise(np.stack([flat, flat]), np.array([0.0, 50.0]), np.random.default_rng(0))
    assert (per_item[0] == 128).all() and per_item[1].astype(float).std() > 30
