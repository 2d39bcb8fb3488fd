"""The model-repository writer: configs generated from the export contract, parsed strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from export.onnx_export import TensorSpec
from export.repository import RepositoryModel, render_config, validate_config_text, write_model


def entry(tmp_path: Path) -> RepositoryModel:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not really onnx")
    return RepositoryModel(
        name="clf",
        task="classification",
        inputs=[TensorSpec("image", "uint8", [-1, 1, 32, 32])],
        outputs=[TensorSpec("probs", "float32", [-1, 10])],
        files={"model.onnx": onnx_file},
        labels=[str(i) for i in range(10)],
        parameters={"image_size": "32"},
    )


def test_cpu_target_is_python_backend_with_batching(tmp_path: Path) -> None:
    cfg = validate_config_text(render_config(entry(tmp_path), "cpu"))
    assert cfg.backend == "python" and not cfg.platform
    assert list(cfg.input[0].dims) == [1, 32, 32] and cfg.max_batch_size == 64
    assert cfg.HasField("dynamic_batching")
    assert cfg.parameters["task"].string_value == "classification"
    assert cfg.output[0].label_filename == "labels.txt"


def test_gpu_target_is_native_onnxruntime(tmp_path: Path) -> None:
    cfg = validate_config_text(render_config(entry(tmp_path), "gpu"))
    assert cfg.platform == "onnxruntime_onnx" and not cfg.backend
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU


def test_strict_parse_rejects_unknown_fields() -> None:
    with pytest.raises(text_format.ParseError):
        validate_config_text('name: "x"\nbackend: "python"\nmax_batch_sise: 4\n')


def test_name_must_match_folder() -> None:
    with pytest.raises(ValueError, match="does not match"):
        validate_config_text('name: "x"\nbackend: "python"\n', expect_name="y")


def test_versions_reuse_identical_and_add_new(tmp_path: Path) -> None:
    e = entry(tmp_path)
    repo = tmp_path / "repo"
    assert write_model(repo, "cpu", e).name == "1"
    assert write_model(repo, "cpu", e).name == "1"  # identical files: same version
    e.files["model.onnx"].write_bytes(b"retrained")
    v2 = write_model(repo, "cpu", e)
    assert v2.name == "2" and (repo / "clf" / "1" / "model.onnx").exists()
    assert (v2 / "model_card.json").exists() and (v2 / "model.py").exists()
