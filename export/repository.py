"""Triton model-repository writer: one ModelConfig per model, two targets.

* ``cpu``: a Python-backend model (``serving/triton/models/<backend_model>.py`` copied as
  ``model.py``) that holds an onnxruntime session and runs one batched call per ``execute``.
* ``gpu``: Triton's native ``platform: "onnxruntime_onnx"`` on ``KIND_GPU`` for plain ONNX
  models; Python-backend models (e.g. the text generator) keep the Python backend on the GPU.

The config is built as a ``ModelConfig`` protobuf from the same TensorSpecs used at export,
written as text, then parsed back strictly: a typo can never reach Triton.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.onnx_export import TensorSpec

TARGETS = ("cpu", "gpu")
BACKEND_MODELS_DIR = Path(__file__).resolve().parent.parent / "serving" / "triton" / "models"

_DTYPES = {
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bool": "TYPE_BOOL",
    "bytes": "TYPE_STRING",
    "object": "TYPE_STRING",
}


@dataclass
class RepositoryModel:
    """Everything Triton and the gateway need to know about one served model."""

    name: str
    task: str
    inputs: list[TensorSpec]  # full shapes, batch axis first when batched
    outputs: list[TensorSpec]
    files: dict[str, Path]  # file name inside the version folder -> source file
    parameters: dict[str, str] = field(default_factory=dict)  # task facts the gateway reads at start-up
    labels: list[str] | None = None
    card: dict[str, Any] = field(default_factory=dict)  # metrics, data, parity: written as model_card.json
    backend_model: str = "onnx_runner"  # Python-backend source used on the cpu target
    gpu_native: bool = True  # gpu target: onnxruntime_onnx platform (needs files["model.onnx"])
    max_batch_size: int = 64
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0  # measured: 0 beat every positive delay on CPU (requests queue up anyway)
    preferred_batch_sizes: list[int] = field(default_factory=list)
    cpu_instances: int = 2  # two single-threaded instances beat one two-threaded one on 2 cores
    cpu_threads: int = 1
    gpu_instances: int = 1
    decoupled: bool = False
    # Versions Triton serves at once (version_policy latest N; 0 = all). 2 keeps the previous version
    # loadable beside a new one for a canary or a rollback; Triton's default (latest 1) would not.
    serve_versions: int = 2


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    return list(spec.shape[1:] if batched else spec.shape)


def build_config(model: RepositoryModel, target: str) -> Any:
    """The ModelConfig protobuf for ``model`` on ``target`` (cpu|gpu)."""
    from tritonclient.grpc import model_config_pb2 as mc

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    cfg = mc.ModelConfig(name=model.name, max_batch_size=model.max_batch_size)
    batched = model.max_batch_size > 0
    native = target == "gpu" and model.gpu_native
    if native:
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = "model.onnx"
    else:
        cfg.backend = "python"
    for spec in model.inputs:
        cfg.input.add(name=spec.name, data_type=getattr(mc, _DTYPES[spec.dtype]), dims=_dims(spec, batched))
    for i, spec in enumerate(model.outputs):
        out = cfg.output.add(
            name=spec.name, data_type=getattr(mc, _DTYPES[spec.dtype]), dims=_dims(spec, batched)
        )
        if model.labels and i == 0:
            out.label_filename = "labels.txt"  # enables Triton's classification extension too
    if model.dynamic_batching and batched:
        db = cfg.dynamic_batching
        db.max_queue_delay_microseconds = model.max_queue_delay_us
        db.preferred_batch_size.extend(model.preferred_batch_sizes)
    group = cfg.instance_group.add()
    if target == "gpu":
        group.kind = mc.ModelInstanceGroup.KIND_GPU
        group.count = model.gpu_instances
    else:
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        group.count = model.cpu_instances
    if model.decoupled:
        cfg.model_transaction_policy.decoupled = True
    if model.serve_versions > 0:
        cfg.version_policy.latest.num_versions = model.serve_versions
    else:
        cfg.version_policy.all.SetInParent()
    params = {"task": model.task, **model.parameters}
    if model.labels:
        params["labels"] = json.dumps(model.labels)
    if not native:
        params.setdefault("device", target)
        params.setdefault("intra_op_threads", str(model.cpu_threads))
    elif "bytes_per_pixel" in params:
        # Variable-size models on Triton's onnxruntime backend: device allocations are too dear to
        # give up per call, so keep the arena but size it to requests (not powers of two) and shrink
        # it back after every run: a large image must not pin its peak for the process's lifetime.
        params.setdefault("arena_extend_strategy", "1")
        params.setdefault("memory.enable_memory_arena_shrinkage", "cpu:0;gpu:0")
    for key, value in sorted(params.items()):
        cfg.parameters[key].string_value = str(value)
    return cfg


def render_config(model: RepositoryModel, target: str) -> str:
    from google.protobuf import text_format

    text = text_format.MessageToString(build_config(model, target))
    validate_config_text(text, expect_name=model.name)
    return text


def validate_config_text(text: str, expect_name: str | None = None) -> Any:
    """Strictly parse config.pbtxt text with tritonclient's ModelConfig; raise on any unknown field."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(text, mc.ModelConfig())
    if expect_name is not None and cfg.name != expect_name:
        raise ValueError(f"config name {cfg.name!r} does not match its folder {expect_name!r}")
    if not (cfg.backend or cfg.platform):
        raise ValueError(f"model {cfg.name!r} names neither a backend nor a platform")
    for tensor in [*cfg.input, *cfg.output]:
        if not tensor.dims and not tensor.reshape.shape:  # parses, but Triton 2.51 refuses to load it
            raise ValueError(f"model {cfg.name!r}: tensor {tensor.name!r} has no dims; use [1] (and reshape)")
    return cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def existing_versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())


def write_model(repo: Path, target: str, model: RepositoryModel, version: int | str = "auto") -> Path:
    """Write ``model`` into ``repo/<name>`` for ``target``; returns the version folder.

    ``version="auto"`` reuses the newest version when its files are byte-identical to these
    (re-running export changes nothing) and otherwise adds the next number, so a retrained
    model becomes a new version beside the old one.
    """
    model_dir = repo / model.name
    model_dir.mkdir(parents=True, exist_ok=True)
    sources = dict(model.files)
    if not (target == "gpu" and model.gpu_native):
        sources["model.py"] = BACKEND_MODELS_DIR / f"{model.backend_model}.py"
    digests = {name: _sha256(src) for name, src in sorted(sources.items())}

    versions = existing_versions(model_dir)
    if version == "auto":
        number = versions[-1] if versions else 1
        if versions and _card_digests(model_dir / str(number)) != digests:
            number += 1
    else:
        number = int(version)
    vdir = model_dir / str(number)
    vdir.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        shutil.copyfile(src, vdir / name)
    card = {
        "name": model.name,
        "version": number,
        "task": model.task,
        "target": target,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": digests,
        **model.card,
    }
    (vdir / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    if model.labels:
        (model_dir / "labels.txt").write_text("\n".join(model.labels) + "\n")
    (model_dir / "config.pbtxt").write_text(render_config(model, target))
    return vdir


def _card_digests(vdir: Path) -> dict[str, str] | None:
    try:
        return json.loads((vdir / "model_card.json").read_text()).get("files")
    except (OSError, ValueError):
        return None


def validate_repository(repo: Path) -> list[str]:
    """Parse every config.pbtxt under ``repo`` strictly; return the model names."""
    names = []
    for cfg_path in sorted(repo.glob("*/config.pbtxt")):
        validate_config_text(cfg_path.read_text(), expect_name=cfg_path.parent.name)
        names.append(cfg_path.parent.name)
    return names
