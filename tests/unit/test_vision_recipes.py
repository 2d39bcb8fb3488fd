"""Segmentation, super-resolution and anomaly recipes: tiny training run, checkpoint, metrics, export.

Each recipe trains once per module (``--profile tiny``, seconds) into a temporary folder; the
tests then check the checkpoint loads with ``weights_only=True``, metrics.json carries the key
numbers, the exporter's parity checks pass and both targets' config.pbtxt parse strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from export.__main__ import main as export_main
from export.repository import validate_config_text
from export.tasks.super_resolution import receptive_radius
from training.common import load_checkpoint
from training.models import build_model

TINY = ["--profile", "tiny", "--no-progress"]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training import segment

    out = tmp_path_factory.mktemp("segmenter")
    segment.main([*TINY, "--out", str(out)])
    return out


@pytest.fixture(scope="module", params=[2, 4], ids=["x2", "x4"])
def super_resolver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    from training import super_resolve

    out = tmp_path_factory.mktemp(f"sr_x{request.param}")
    super_resolve.main([*TINY, "--scale", str(request.param), "--out", str(out)])
    return out, request.param


@pytest.fixture(scope="module", params=["--variational", "--no-variational"], ids=["vae", "dae"])
def anomaly_detector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training import anomaly

    out = tmp_path_factory.mktemp("anomaly")
    anomaly.main([*TINY, request.param, "--out", str(out)])
    return out


def payload(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def export_and_configs(tmp_path: Path, checkpoint: Path, name: str) -> dict[str, Any]:
    """Export to both targets through the CLI; return {target: parsed ModelConfig} and the model card."""
    repo = tmp_path / "repo"
    assert export_main(["--checkpoint", f"{checkpoint}:{name}", "--repository", str(repo)]) == 0
    configs = {
        t: validate_config_text((repo / t / name / "config.pbtxt").read_text(), expect_name=name)
        for t in ("cpu", "gpu")
    }
    assert configs["cpu"].backend == "python" and configs["gpu"].platform == "onnxruntime_onnx"
    card = json.loads((repo / "cpu" / name / "1" / "model_card.json").read_text())
    graph = onnx.load(str(repo / "gpu" / name / "1" / "model.onnx")).graph
    return {
        "configs": configs,
        "card": card,
        "graph": graph,
        "params": {k: v.string_value for k, v in configs["cpu"].parameters.items()},
    }


def dim_params(value_info: Any) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# --- segmentation ---------------------------------------------------------------------------------


def test_segmentation_artefacts(segmenter: Path) -> None:
    p = payload(segmenter / "model.pt")
    assert p["task"] == "segmentation" and p["arch"] == "unet"
    assert set(p["meta"]) >= {"classes", "palette", "channels", "multiple_of", "image_size", "mean", "std"}
    assert len(p["meta"]["palette"]) == len(p["meta"]["classes"])
    metrics = json.loads((segmenter / "metrics.json").read_text())
    assert 0.0 <= metrics["test_mean_iou"] <= 1.0
    assert set(metrics["test_iou"]) == set(p["meta"]["classes"])
    for png in ("training_curve.png", "segmentation_examples.png"):
        assert (segmenter / png).stat().st_size > 1000
    assert load_checkpoint(segmenter / "model.pt").model is not None


def test_segmentation_export(segmenter: Path, tmp_path: Path) -> None:
    res = export_and_configs(tmp_path, segmenter / "model.pt", "segmenter")
    params, graph = res["params"], res["graph"]
    assert params["task"] == "segmentation"
    assert json.loads(params["classes"]) == ["background", "circle", "square", "triangle"]
    assert len(json.loads(params["palette"])) == 4 and params["channels"] == "3"
    assert int(params["multiple_of"]) == 2 ** load_checkpoint(segmenter / "model.pt").config["depth"]
    (inp,), (out,) = graph.input, graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dim_params(inp) == ["batch", 3, "height", "width"]
    assert out.name == "mask" and out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dim_params(out) == ["batch", "height", "width"]
    parity = res["card"]["parity"]
    assert parity["served_outputs"]["mismatch_fraction/mask"] <= parity["uint8_max_fraction"]


# --- super-resolution ------------------------------------------------------------------------------


def test_super_resolution_artefacts(super_resolver: tuple[Path, int]) -> None:
    out, scale = super_resolver
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("bicubic", "psnr", "gan"):
        assert metrics[key]["psnr"] > 10 and 0 < metrics[key]["ssim"] <= 1
    assert metrics["scale"] == scale
    for variant in ("psnr", "gan"):
        ckpt = out / f"sr_{variant}_x{scale}" / "model.pt"
        p = payload(ckpt)
        assert p["task"] == "super_resolution" and p["arch"] == "srresnet"
        assert (
            p["meta"]["scale"] == scale and p["meta"]["variant"] == variant and p["config"]["scale"] == scale
        )
        assert json.loads((ckpt.parent / "metrics.json").read_text())["variant"] == variant
    for png in ("training_curve.png", "sr_comparison.png"):
        assert (out / png).stat().st_size > 1000


def test_super_resolution_export(super_resolver: tuple[Path, int], tmp_path: Path) -> None:
    out, scale = super_resolver
    for variant in ("psnr", "gan"):
        name = f"sr_{variant}_x{scale}"
        res = export_and_configs(tmp_path / variant, out / name / "model.pt", name)
        params, graph = res["params"], res["graph"]
        assert params["task"] == "super_resolution" and params["scale"] == str(scale)
        assert params["variant"] == variant and params["channels"] == "3"
        assert int(params["tile_size"]) > 2 * int(params["tile_margin"]) > 0
        (inp,), (o,) = graph.input, graph.output
        assert dim_params(inp) == ["batch", 3, "height", "width"]
        assert o.name == "image_sr" and o.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert dim_params(o) == ["batch", 3, "height_sr", "width_sr"]
        parity = res["card"]["parity"]
        assert all(
            r["max_abs_err/image_sr"] <= parity["float_atol"]["image_sr"] for r in parity["float_outputs"]
        )


@pytest.mark.parametrize("scale", [2, 4])
def test_tile_margin_covers_the_receptive_field(scale: int) -> None:
    """No input pixel farther than receptive_radius() (LR pixels) may influence an output pixel."""
    cfg = {"scale": scale, "width": 8, "num_blocks": 2, "head_kernel": 5}
    torch.manual_seed(0)
    model = build_model("srresnet", cfg).eval()
    x = torch.rand(1, 3, 41, 41, requires_grad=True)
    y = model(x)
    c = 20 * scale + scale // 2  # an HR pixel inside LR pixel (20, 20)
    y[0, :, c, c].sum().backward()
    ys, xs = np.nonzero(x.grad[0].abs().sum(0).numpy())
    reach = int(max(np.abs(ys - 20).max(), np.abs(xs - 20).max()))
    radius = receptive_radius({**cfg, "bicubic_skip": True})
    assert reach <= radius <= reach + 2  # safe, and not wastefully loose


# --- anomaly ---------------------------------------------------------------------------------------


def test_anomaly_artefacts(anomaly_detector: Path) -> None:
    p = payload(anomaly_detector / "model.pt")
    assert p["task"] == "anomaly" and p["arch"] == "autoencoder"
    assert set(p["meta"]) >= {"threshold", "image_size", "channels", "mean", "std"}
    metrics = json.loads((anomaly_detector / "metrics.json").read_text())
    assert 0.0 <= metrics["test_roc_auc"] <= 1.0 and metrics["threshold"] == p["meta"]["threshold"] > 0
    assert set(metrics["test_roc_auc_per_kind"]) == {"shapes", "noise", "textures"}
    for png in ("training_curve.png", "score_histogram.png"):
        assert (anomaly_detector / png).stat().st_size > 1000


def test_anomaly_export(anomaly_detector: Path, tmp_path: Path) -> None:
    res = export_and_configs(tmp_path, anomaly_detector / "model.pt", "anomaly")
    params, graph = res["params"], res["graph"]
    meta = load_checkpoint(anomaly_detector / "model.pt").meta
    assert params["task"] == "anomaly" and float(params["threshold"]) == meta["threshold"]
    assert params["image_size"] == str(meta["image_size"]) and params["channels"] == "1"
    assert (
        params["variational"]
        == str(load_checkpoint(anomaly_detector / "model.pt").config["variational"]).lower()
    )
    s = meta["image_size"]
    assert [o.name for o in graph.output] == ["score", "reconstruction"]
    assert dim_params(graph.input[0]) == ["batch", 1, s, s]
    assert dim_params(graph.output[0]) == ["batch", 1]
    assert graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    # Triton refuses a batched output whose config dims are empty: every output keeps >= 1 dim.
    assert all(len(o.dims) >= 1 for o in res["configs"]["cpu"].output)


def test_anomaly_score_in_graph_matches_recipe(anomaly_detector: Path, tmp_path: Path) -> None:
    """The served score is the recipe's score, so the stored threshold means the same thing."""
    from export.onnx_export import ort_session
    from training.anomaly import scores

    export_and_configs(tmp_path, anomaly_detector / "model.pt", "anomaly")
    ckpt = load_checkpoint(anomaly_detector / "model.pt")
    s = ckpt.meta["image_size"]
    x = np.random.default_rng(0).integers(0, 256, (6, 1, s, s), dtype=np.uint8)
    served = ort_session(tmp_path / "repo" / "cpu" / "anomaly" / "1" / "model.onnx").run(
        ["score"], {"image": x}
    )[0]
    np.testing.assert_allclose(served[:, 0], scores(ckpt.model, x, torch.device("cpu")), atol=1e-5)
