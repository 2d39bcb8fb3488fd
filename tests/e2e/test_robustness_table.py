"""make quality's robustness table on tiny models: every task x perturbation cell is produced, and
the served figure equals the offline one within the cell's tolerance (targets are the quick
profile's business: the tiny models are not expected to meet them)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from deploy import robustness
from tests.e2e.test_quality_agreement import LAYOUT
from tests.support.procs import GatewayHandle
from training.data.perturb import PERTURBATIONS

pytestmark = pytest.mark.slow

N = 3  # items per cell: ~150 requests


def test_robustness_table_served_equals_offline(
    gateway: GatewayHandle, served_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    art = tmp_path / "artifacts"
    for name, sub in LAYOUT.items():
        (art / sub).mkdir(parents=True)
        (art / sub / "model.pt").symlink_to(served_checkpoints[name])
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        cells = robustness.run(client, art, N, list(robustness.TASKS), max_side=64)
    got = {(c.task, c.metric, c.perturbation) for c in cells}
    for name in PERTURBATIONS:
        assert ("digits", "top1", name) in got
        assert ("anomaly", "normals_flagged", name) in got
        assert ("anomaly", "anomalies_caught", name) in got
    for name in robustness.SEG_PERTURBATIONS[1:]:
        assert ("segmentation", "miou_drop", name) in got
    assert ("super_resolution", "psnr_gain", "jpeg50") in got
    bad = [c.to_dict() for c in cells if not c.agree]
    assert not bad, bad
    report = robustness.report(cells, N)
    assert report["all_agree"] and all(c["target"] for c in report["cells"] if c["metric"] == "top1")
    json.dumps(report)  # what make quality writes
    assert robustness.plot(cells, tmp_path / "robustness.png").stat().st_size > 0
