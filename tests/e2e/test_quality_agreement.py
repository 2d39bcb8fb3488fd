"""make quality's comparison on small data: served metrics equal offline ones within tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import quality
from tests.support.procs import GatewayHandle

pytestmark = pytest.mark.slow

LAYOUT = {
    "classifier": "classifier",
    "segmenter": "segmenter",
    "sr_psnr_x2": "sr_x2/sr_psnr_x2",
    "sr_gan_x2": "sr_x2/sr_gan_x2",
    "anomaly": "anomaly",
    "denoiser": "denoiser",
    "sampler": "sampler",
    "lstm": "lstm",
    "gpt": "gpt",
}


def test_served_and_offline_agree(
    gateway: GatewayHandle, served_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    art = tmp_path / "artifacts"  # the layout `make train` writes, pointing at the tiny checkpoints
    for name, sub in LAYOUT.items():
        (art / sub).mkdir(parents=True)
        (art / sub / "model.pt").symlink_to(served_checkpoints[name])
    tasks = [
        "classification",
        "segmentation",
        "super_resolution",
        "anomaly",
        "denoising",
        "sampling",
        "text_generation",
    ]
    rows = quality.run(gateway.url, art, limit=40, tasks=tasks)
    assert {r.task for r in rows} == {
        "classification",
        "segmentation",
        "super_resolution",
        "anomaly",
        "denoising",
        "sampling",
        "text_generation",
    }
    bad = [r.to_dict() for r in rows if not r.ok]
    assert not bad, bad
