"""The models the benchmark serves, and the Triton repositories it writes for them.

* ``small``: the served digits classifier (1x32x32 ResNet, ~78k parameters) from
  ``build/model_repository/cpu``; when that is missing, one trained for a single epoch (seconds)
  and exported into ``build/bench/``. Per-request overhead dominates this model.
* ``heavy``: the same ResNet code at 3x64x64 with wider stages and random weights: a speed
  test where compute dominates, so the "x the limit" ratios show what serving itself costs.

The PyTorch twin of each model (for the naive PyTorch server and the eager baseline) is the
training checkpoint when one is known, otherwise the same architecture and config (from the
model card) with random weights: identical compute, which is all a speed test needs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.repository import validate_config_text

# Two basic blocks per stage (ResNet-18's pattern, three stages): ~0.7 M parameters, ~600 images/s
# in-process on this 2-core box, the scale of the prototype (~450/s). One block per stage
# (~1,270/s) makes serving overhead, not compute, the measurement.
HEAVY_CONFIG = {
    "in_channels": 3,
    "num_classes": 10,
    "widths": [32, 64, 128],
    "blocks_per_stage": 2,
    "dropout": 0.0,
}
# What `make tune` recommends for it (reports/tune-heavy.json): two single-threaded instances
# (the limit's layout), preferred batch 4: bigger batches cost more per image on CPU here, and p99 halves.
HEAVY_SERVING = {"cpu_instances": 2, "cpu_threads": 1, "preferred_batch_sizes": [4]}
HEAVY_SIZE = 64


@dataclass
class BenchModel:
    key: str  # small | heavy
    name: str  # served model name
    model_dir: Path  # <repo>/<name> (config.pbtxt, labels.txt, <version>/model.onnx)
    checkpoint: Path  # a save_checkpoint file with the same architecture (maybe random weights)
    trained: bool  # checkpoint holds the served weights (accuracy figures make sense)
    channels: int
    image_size: int
    input_name: str
    output_name: str

    @property
    def version_dir(self) -> Path:
        versions = sorted(
            (p for p in self.model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        return versions[-1]

    @property
    def onnx(self) -> Path:
        return self.version_dir / "model.onnx"

    def describe(self) -> dict[str, Any]:
        card = _card(self.version_dir)
        return {
            "key": self.key,
            "name": self.name,
            "input": [self.channels, self.image_size, self.image_size],
            "arch": card.get("arch"),
            "config": card.get("config"),
            "weights": "trained" if self.trained else "random",
            "onnx_bytes": self.onnx.stat().st_size,
            "parameters": _param_count(self.checkpoint),
        }


def _card(vdir: Path) -> dict[str, Any]:
    try:
        return json.loads((vdir / "model_card.json").read_text())
    except (OSError, ValueError):
        return {}


def _param_count(ckpt: Path) -> int | None:
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception:
        return None
    return int(
        sum(
            v.numel()
            for k, v in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
    )


def _from_model_dir(
    key: str, model_dir: Path, checkpoint: Path | None, workdir: Path, trained: bool | None = None
) -> BenchModel:
    cfg = validate_config_text((model_dir / "config.pbtxt").read_text(), expect_name=model_dir.name)
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    if params.get("task") != "classification":
        raise ValueError(f"{model_dir} is not a classification model (task={params.get('task')!r})")
    channels, size = int(params["channels"]), int(params["image_size"])
    has_ckpt = checkpoint is not None and checkpoint.is_file()
    trained = has_ckpt if trained is None else trained
    if not has_ckpt:  # same architecture and config as the card, random weights
        versions = sorted(
            (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
        )
        card = _card(versions[-1])
        checkpoint = workdir / f"{key}-twin" / "model.pt"
        if not checkpoint.exists():
            _random_checkpoint(card.get("arch", "resnet"), card.get("config", {}), channels, size, checkpoint)
    assert checkpoint is not None
    return BenchModel(
        key,
        model_dir.name,
        model_dir,
        checkpoint,
        trained,
        channels,
        size,
        cfg.input[0].name,
        cfg.output[0].name,
    )


def _random_checkpoint(arch: str, config: dict[str, Any], channels: int, size: int, path: Path) -> Path:
    import torch

    from training.common import save_checkpoint
    from training.models import build_model, config_class

    torch.manual_seed(0)
    cfg_cls = config_class(arch)
    cfg = cfg_cls(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in config.items()
            if k in cfg_cls.__dataclass_fields__
        }
    )
    model = build_model(arch, cfg).eval()
    meta = {
        "labels": [str(i) for i in range(int(config.get("num_classes", 10)))],
        "channels": channels,
        "image_size": size,
        "mean": 0.5,
        "std": 0.5,
        "dataset": "random weights (speed test)",
    }
    save_checkpoint(path, arch, cfg, model, "classification", meta)
    return path


def small_model(repository: Path, name: str, checkpoint: Path | None, workdir: Path) -> BenchModel:
    """The served classifier, or a one-epoch stand-in exported into ``workdir`` when none is built."""
    model_dir = repository / name
    if (model_dir / "config.pbtxt").exists():
        if checkpoint is None:
            guess = Path("build/artifacts") / name / "model.pt"
            checkpoint = guess if guess.is_file() else None
        return _from_model_dir("small", model_dir, checkpoint, workdir)
    ckpt = workdir / "small" / "model.pt"
    if not ckpt.exists():
        from training import classify

        print(
            f"no {model_dir}: training a one-epoch classifier into {ckpt.parent} (speed test only)",
            flush=True,
        )
        classify.main(["--profile", "quick", "--epochs", "1", "--no-progress", "--out", str(ckpt.parent)])
    repo = workdir / "small-repo"
    if not (repo / name / "config.pbtxt").exists():
        _export(ckpt, repo, name)
    return _from_model_dir("small", repo / name, ckpt, workdir)


def heavy_model(workdir: Path) -> BenchModel:
    """A 3x64x64 ResNet with random weights, exported like any classifier."""
    ckpt = workdir / "heavy" / "model.pt"
    repo = workdir / "heavy-repo"
    stamp = json.dumps([HEAVY_CONFIG, HEAVY_SERVING], sort_keys=True)
    if not ckpt.exists() or (workdir / "heavy" / "config.json").read_text() != stamp:
        _random_checkpoint("resnet", HEAVY_CONFIG, 3, HEAVY_SIZE, ckpt)
        (workdir / "heavy" / "config.json").write_text(stamp)
        shutil.rmtree(repo, ignore_errors=True)
    if not (repo / "heavy" / "config.pbtxt").exists():
        _export(ckpt, repo, "heavy", **HEAVY_SERVING)
    return _from_model_dir("heavy", repo / "heavy", ckpt, workdir, trained=False)


def _export(ckpt: Path, repo: Path, name: str, **serving: Any) -> None:
    import tempfile

    from export.repository import write_model
    from export.tasks import get_exporter
    from training.common import load_checkpoint

    loaded = load_checkpoint(ckpt)
    with tempfile.TemporaryDirectory(prefix=f"bench-export-{name}-") as tmp:
        for model in get_exporter(loaded.task)(loaded, Path(tmp), name):
            for key, value in serving.items():  # instance/thread/batching choices for the cpu target
                setattr(model, key, value)
            write_model(repo, "cpu", model, version=1)


def copy_model(src: Path, repo: Path, name: str, edit: Any = None) -> Path:
    """Copy a model folder into ``repo`` as ``name``; ``edit(cfg)`` may change the parsed ModelConfig.

    The config is parsed strictly, edited as a protobuf and written back validated, so a
    variant can never carry a typo into Triton.
    """
    from google.protobuf import text_format

    dest = repo / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = validate_config_text((src / "config.pbtxt").read_text(), expect_name=src.name)
    cfg.name = name
    if edit is not None:
        edit(cfg)
    text = text_format.MessageToString(cfg)
    validate_config_text(text, expect_name=name)
    (dest / "config.pbtxt").write_text(text)
    return dest


def without_batching(cfg: Any) -> None:
    cfg.ClearField("dynamic_batching")


def bench_repository(models: list[BenchModel], dest: Path) -> dict[str, dict[str, str]]:
    """One repository with each model twice: as exported (dynamic batching) and ``<name>_nobatch``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    names: dict[str, dict[str, str]] = {}
    for m in models:
        copy_model(m.model_dir, dest, m.name)
        copy_model(m.model_dir, dest, f"{m.name}_nobatch", without_batching)
        names[m.key] = {"batching": m.name, "no_batching": f"{m.name}_nobatch"}
    return names
