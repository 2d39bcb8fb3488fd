"""Bring-your-own export (export/byo.py): users' graphs wrapped into our contract, mismatches refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.__main__ import main as export_main
from export.byo import IMAGENET_MEAN, IMAGENET_STD
from tests.support.foreign_models import write_foreign_models


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("foreign")
    write_foreign_models(folder)
    return folder


def export(folder: Path, repo: Path, *args: str) -> int:
    return export_main([*args, "--repository", str(repo), "--targets", "cpu"])


def served_onnx(repo: Path, name: str) -> Path:
    (path,) = sorted((repo / "cpu" / name).glob("*/model.onnx"))
    return path


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def images(n: int, c: int, s: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, c, s, s), dtype=np.uint8)


def test_nchw_logits_classifier_wrapped_equals_the_users_graph(foreign: Path, tmp_path: Path) -> None:
    rc = export(
        foreign,
        tmp_path,
        *("--onnx", f"{foreign / 'mobilenet.onnx'}:mobilenet", "--task", "classification"),
        *("--labels", str(foreign / "mobilenet.labels"), "--input-size", "32"),
    )
    assert rc == 0
    x = images(4, 3, 32)
    got = run(served_onnx(tmp_path, "mobilenet"), {"image": x})
    logits = run(foreign / "mobilenet.onnx", {"input.1": (x / 255.0).astype(np.float32)}).astype(np.float64)
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert got.shape == (4, 5) and np.abs(got - want).max() < 1e-5
    card = json.loads(next((tmp_path / "cpu" / "mobilenet").glob("*/model_card.json")).read_text())
    assert card["parity"]["max_abs_err/probs"] <= card["parity"]["atol"] == 1e-5
    config = (tmp_path / "cpu" / "mobilenet" / "config.pbtxt").read_text()
    assert (
        '"classification"' in config
        and "class_4" in (tmp_path / "cpu" / "mobilenet" / "labels.txt").read_text()
    )


def test_nhwc_imagenet_probabilities_classifier(foreign: Path, tmp_path: Path) -> None:
    rc = export(
        foreign,
        tmp_path,
        *("--onnx", f"{foreign / 'effnet.onnx'}:effnet", "--task", "classification"),
        *("--labels", str(foreign / "efficientnet_nhwc.labels"), "--input-layout", "nhwc"),
        *("--input-size", "40", "--normalize", "imagenet", "--outputs", "probs"),
    )
    assert rc == 0
    x = images(3, 3, 40)
    got = run(served_onnx(tmp_path, "effnet"), {"image": x})
    mean, std = np.array(IMAGENET_MEAN)[None, :, None, None], np.array(IMAGENET_STD)[None, :, None, None]
    user_x = ((x / 255.0 - mean) / std).transpose(0, 2, 3, 1).astype(np.float32)
    assert np.abs(got - run(foreign / "effnet.onnx", {"pixels": user_x})).max() < 1e-5


def test_segmenter_mask_is_the_argmax_of_the_users_scores(foreign: Path, tmp_path: Path) -> None:
    rc = export(
        foreign,
        tmp_path,
        *("--onnx", f"{foreign / 'fcn.onnx'}:fcn", "--task", "segmentation"),
        *("--labels", str(foreign / "fcn.labels"), "--multiple-of", "4"),
    )
    assert rc == 0
    x = images(1, 3, 24)[:, :, :, :20]  # any multiple of 4, not square
    got = run(served_onnx(tmp_path, "fcn"), {"image": np.ascontiguousarray(x)})
    scores = run(foreign / "fcn.onnx", {"x": (x / 255.0).astype(np.float32)})
    assert got.dtype == np.uint8 and got.shape == (1, 24, 20)
    assert (got == scores.argmax(1)).mean() > 0.999


def test_torch_factory_with_weights(foreign: Path, tmp_path: Path) -> None:
    rc = export(
        foreign,
        tmp_path,
        *("--torch", "tests.support.foreign_models:mobilenet_like"),
        *("--weights", f"{foreign / 'mobilenet.pt'}:mnet", "--task", "classification"),
        *("--labels", str(foreign / "mobilenet.labels"), "--input-size", "32"),
    )
    assert rc == 0
    assert run(served_onnx(tmp_path, "mnet"), {"image": images(2, 3, 32)}).shape == (2, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--input-layout", "nhwc", "--input-size", "32"), "did you mean --input-layout nchw"),
        (("--input-size", "64"), "--input-size 64, but input"),
        (("--channels", "1", "--input-size", "32"), "--channels 1, but input"),
        (("--input-size", "32", "--outputs", "probs"), "pass --outputs logits"),
        (
            ("--input-size", "32", "--mean", "0.5,0.5"),
            "--mean has 2 values; the model's input has 3 channels",
        ),
    ],
)
def test_a_spec_that_contradicts_the_graph_fails_at_export(
    foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    rc = export(
        foreign,
        tmp_path,
        *("--onnx", str(foreign / "mobilenet.onnx"), "--task", "classification"),
        *("--labels", str(foreign / "mobilenet.labels"), *args),
    )
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cpu").exists() or not list((tmp_path / "cpu").glob("*/config.pbtxt"))


def test_wrong_label_count_nan_outputs_and_wrong_task_rank_fail(
    foreign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx, labels = str(foreign / "mobilenet.onnx"), str(foreign / "fcn.labels")
    assert export(foreign, tmp_path, "--onnx", onnx, "--task", "classification", "--labels", labels) == 2
    assert "has 5 classes; --labels lists 3" in capsys.readouterr().err
    broken = ("--onnx", str(foreign / "broken.onnx"), "--labels", str(foreign / "broken.labels"))
    assert export(foreign, tmp_path, *broken, "--task", "classification", "--input-size", "16") == 2
    assert "NaN" in capsys.readouterr().err
    fcn = ("--onnx", str(foreign / "fcn.onnx"), "--labels", str(foreign / "fcn.labels"))
    assert export(foreign, tmp_path, *fcn, "--task", "classification", "--input-size", "32") == 2
    assert "classification expects (N, classes)" in capsys.readouterr().err
