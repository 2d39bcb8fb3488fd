"""Tiny models trained in seconds for the test suite, cached under build/test-cache.

The cache key hashes the code that produces the artefact, so a change to a recipe, a model
or the exporter retrains; an unchanged tree reuses the checkpoint from the last run.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.support.procs import ROOT

CACHE = ROOT / "build" / "test-cache"


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for base in paths:
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_checkpoint(name: str, train: Callable[[Path], None], sources: list[Path], args: str) -> Path:
    """Run ``train(out_dir)`` once per code version; return ``out_dir/model.pt``."""
    key = _digest([ROOT / "training", *sources], args)
    out = CACHE / f"{name}-{key}"
    ckpt = out / "model.pt"
    if not ckpt.exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        train(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return ckpt


CLASSIFIER_ARGS = ["--profile", "quick", "--epochs", "12", "--no-progress", "--threads", "2"]


def classifier_checkpoint() -> Path:
    from training import classify

    return cached_checkpoint("classifier", lambda out: classify.main([*CLASSIFIER_ARGS, "--out", str(out)]),
                             [], " ".join(CLASSIFIER_ARGS))


def build_repository(dest: Path, checkpoints: dict[str, Path], targets: tuple[str, ...] = ("cpu", "gpu")) -> Path:
    from export.__main__ import main as export_main

    args = []
    for name, ckpt in checkpoints.items():
        args += ["--checkpoint", f"{ckpt}:{name}"]
    assert export_main([*args, "--repository", str(dest), "--targets", *targets]) == 0
    return dest
