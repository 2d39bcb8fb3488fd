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
# What every recipe depends on; each recipe adds its own files (keyed per recipe, so editing one
# model's code retrains only that model's test checkpoint).
COMMON_SOURCES = [
    ROOT / "training" / "common.py",
    ROOT / "training" / "models" / "__init__.py",
    ROOT / "serving" / "imaging.py",
]


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for base in paths:
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_run(name: str, train: Callable[[Path], None], sources: list[Path], args: str) -> Path:
    """Run ``train(out_dir)`` once per code version; return ``out_dir``."""
    key = _digest([*COMMON_SOURCES, *sources], args)
    out = CACHE / f"{name}-{key}"
    if not (out / ".done").exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        train(tmp)
        (tmp / ".done").touch()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def cached_checkpoint(name: str, train: Callable[[Path], None], sources: list[Path], args: str) -> Path:
    """Run ``train(out_dir)`` once per code version; return ``out_dir/model.pt``."""
    return cached_run(name, train, sources, args) / "model.pt"


TINY = ["--profile", "tiny", "--no-progress", "--threads", "2"]


def segmenter_checkpoint() -> Path:
    from training import segment

    sources = [
        ROOT / "training" / f for f in ("segment.py", "models/unet.py", "data/shapes.py", "data/bundled.py")
    ]
    return cached_checkpoint(
        "segmenter", lambda out: segment.main([*TINY, "--out", str(out)]), sources, " ".join(TINY)
    )


def sr_checkpoints(scale: int = 2) -> dict[str, Path]:
    """Both generators of one tiny super-resolution run: {served name: checkpoint}."""
    from training import super_resolve

    args = [*TINY, "--scale", str(scale)]
    sources = [
        ROOT / "training" / f
        for f in ("super_resolve.py", "models/srgan.py", "data/photos.py", "data/bundled.py")
    ]
    out = cached_run(
        f"sr_x{scale}", lambda o: super_resolve.main([*args, "--out", str(o)]), sources, " ".join(args)
    )
    return {f"sr_{v}_x{scale}": out / f"sr_{v}_x{scale}" / "model.pt" for v in ("psnr", "gan")}


def anomaly_checkpoint() -> Path:
    from training import anomaly

    sources = [
        ROOT / "training" / f
        for f in (
            "anomaly.py",
            "models/autoencoder.py",
            "data/anomaly.py",
            "data/digits.py",
            "data/perturb.py",
        )
    ]
    return cached_checkpoint(
        "anomaly", lambda out: anomaly.main([*TINY, "--out", str(out)]), sources, " ".join(TINY)
    )


def denoiser_checkpoint() -> Path:
    from training import denoise

    sources = [ROOT / "training" / f for f in ("denoise.py", "models/denoiser.py", "data/photos.py")]
    return cached_checkpoint(
        "denoiser", lambda out: denoise.main([*TINY, "--out", str(out)]), sources, " ".join(TINY)
    )


def sampler_checkpoint() -> Path:
    """The tiny DCGAN generator (model.pt; its judge.pt lies beside it)."""
    from training import gan_sample

    sources = [
        ROOT / "training" / f
        for f in ("gan_sample.py", "models/dcgan.py", "data/digits.py", "data/perturb.py")
    ]
    sources += [ROOT / "serving" / "latent.py"]
    return cached_checkpoint(
        "sampler", lambda out: gan_sample.main([*TINY, "--out", str(out)]), sources, " ".join(TINY)
    )


CLASSIFIER_ARGS = ["--profile", "quick", "--epochs", "12", "--no-progress", "--threads", "2"]


def classifier_checkpoint() -> Path:
    from training import classify

    sources = [
        ROOT / "training" / f
        for f in ("classify.py", "models/resnet.py", "data/digits.py", "data/perturb.py")
    ]
    return cached_checkpoint(
        "classifier",
        lambda out: classify.main([*CLASSIFIER_ARGS, "--out", str(out)]),
        sources,
        " ".join(CLASSIFIER_ARGS),
    )


def variant_checkpoint(ckpt: Path, seed: int, scale: float = 0.02) -> Path:
    """``ckpt`` with every float weight nudged by seeded noise (``scale`` x the tensor's std): other
    weights, near-identical accuracy. Stands in for a retrained model (a new version) without a
    second training run; cached beside the source checkpoint."""
    out = ckpt.parent / f"variant-{seed}" / ckpt.name
    if not out.exists():
        import torch

        payload = torch.load(ckpt, map_location="cpu", weights_only=True)
        gen = torch.Generator().manual_seed(seed)
        for key, t in payload["state_dict"].items():
            if t.is_floating_point() and t.numel() > 1 and "running_" not in key:  # not batch-norm statistics
                payload["state_dict"][key] = t + torch.randn(t.shape, generator=gen) * (
                    scale * float(t.std())
                )
        out.parent.mkdir(exist_ok=True)
        torch.save(payload, out.with_suffix(".tmp"))
        out.with_suffix(".tmp").replace(out)
    return out


def build_repository(
    dest: Path, checkpoints: dict[str, Path], targets: tuple[str, ...] = ("cpu", "gpu")
) -> Path:
    from export.__main__ import main as export_main

    args = []
    for name, ckpt in checkpoints.items():
        args += ["--checkpoint", f"{ckpt}:{name}"]
    assert export_main([*args, "--repository", str(dest), "--targets", *targets]) == 0
    return dest
