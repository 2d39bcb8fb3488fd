"""Pieces every training recipe shares: seeding, devices, checkpoints, curves, reports."""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from training.models import build_model, config_to_dict

CHECKPOINT_NAME = "model.pt"
METRICS_NAME = "metrics.json"
CURVE_NAME = "training_curve.png"


def seed_everything(seed: int) -> None:
    """Make a run reproducible on CPU (and as far as cuDNN allows on GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def base_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The flags every recipe takes, so `python -m training.<task> --help` reads the same everywhere."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--profile",
        choices=["tiny", "quick", "full"],
        default="quick",
        help="tiny: seconds (tests); quick: minutes on 2 CPU cores; full: best model, meant for a GPU",
    )
    p.add_argument(
        "--out", type=Path, default=Path(default_out), help="folder for checkpoint, metrics and plots"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epoch count")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (CI logs)")
    return p


def setup_run(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    return resolve_device(args.device)


def save_checkpoint(
    path: Path, arch: str, config: Any, model: nn.Module, task: str, meta: dict[str, Any] | None = None
) -> None:
    """Store build arguments + weights + task facts; plain types only so `weights_only=True` loads it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": 1,
        "arch": arch,
        "config": config_to_dict(config),
        "task": task,
        "meta": meta or {},
        "state_dict": state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crashed run never leaves a half-written checkpoint behind


@dataclass
class Checkpoint:
    arch: str
    config: dict[str, Any]
    task: str
    meta: dict[str, Any]
    model: nn.Module


def load_checkpoint(path: Path | str, map_location: str = "cpu") -> Checkpoint:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(payload["arch"], payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Checkpoint(payload["arch"], payload["config"], payload["task"], payload.get("meta", {}), model)


@dataclass
class History:
    """Per-epoch curves; written to metrics.json and plotted."""

    series: dict[str, list[float]] = field(default_factory=dict)

    def log(self, **values: float) -> None:
        for k, v in values.items():
            self.series.setdefault(k, []).append(float(v))


def write_metrics(out: Path, metrics: dict[str, Any], history: History | None = None) -> None:
    data = dict(metrics)
    if history is not None:
        data["history"] = history.series
    (out / METRICS_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def plot_curves(
    out: Path, history: History, title: str, groups: Iterable[tuple[str, ...]] | None = None
) -> Path:
    """One panel per group of series (e.g. losses, accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(groups or [tuple(history.series)])
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        for name in group:
            ys = history.series.get(name, [])
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = out / CURVE_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress(iterable: Iterable[Any], disable: bool, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kw)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
