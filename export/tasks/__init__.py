"""Per-task exporters: checkpoint -> verified ONNX file(s) -> RepositoryModel entries.

Each task module registers ``exporter(ckpt, workdir, name) -> list[RepositoryModel]`` with
``@register_exporter("<task>")``; the task string is the one the training recipe stored in
the checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from export.repository import RepositoryModel
from training.common import Checkpoint

Exporter = Callable[[Checkpoint, Path, str], list[RepositoryModel]]
_EXPORTERS: dict[str, Exporter] = {}
_MODULES = (
    "classification",
    "segmentation",
    "super_resolution",
    "text_generation",
    "anomaly",
    "denoising",
    "sampling",
    "translation",
    "text_classification",
)


def register_exporter(task: str) -> Callable[[Exporter], Exporter]:
    def wrap(fn: Exporter) -> Exporter:
        _EXPORTERS[task] = fn
        return fn

    return wrap


def get_exporter(task: str) -> Exporter:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise
    if task not in _EXPORTERS:
        raise KeyError(f"no exporter for task {task!r}; known: {', '.join(sorted(_EXPORTERS))}")
    return _EXPORTERS[task]
