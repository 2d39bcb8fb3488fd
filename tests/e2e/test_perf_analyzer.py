"""Smoke run of the perf_analyzer bench step (deploy/bench/perf_analyzer.py), so it keeps working.

Triton's own perf_analyzer, a few short windows at c=1, against Triton direct and the gateway's
gRPC and HTTP KServe doors (its own stack on free ports, the suite's tiny classifier). Figures are
not judged here (the bench reports them); the tool must run through every door and get answers.
Skipped, with the reason, only where the binary cannot be fetched or cannot start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.bench import perf_analyzer
from deploy.bench.models import copy_model
from serving import harness

pytestmark = pytest.mark.slow


def test_perf_analyzer_runs_through_every_door(model_repository: Path, tmp_path: Path) -> None:
    try:
        exe = perf_analyzer.ensure_binary()
    except perf_analyzer.Unavailable as exc:
        pytest.skip(f"perf_analyzer cannot run here: {exc}")
    repo = tmp_path / "repo"
    copy_model(model_repository / "cpu" / "classifier", repo, "classifier")
    with harness.start_stack(repo, tmp_path / "stack") as st:
        rows = perf_analyzer.measure_doors(exe, st, "classifier", [1], 300, tmp_path)
    assert [r["door"] for r in rows] == list(perf_analyzer.DOORS)
    for row in rows:
        assert "error" not in row, row
        assert row["infer_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, row
    by_door = {r["door"]: r for r in rows}
    for door in perf_analyzer.DIRECT:
        assert by_door[door]["ratio_to_direct"] > 0 and by_door[door]["gateway_cpu_us_per_request"] > 0
