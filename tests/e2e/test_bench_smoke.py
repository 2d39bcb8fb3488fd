"""The load tool, Locust and the benchmark at tiny scale against real servers: report shape, no failures.

No timing assertions: figures vary with the machine; only structure and success are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.loadtest.targets import ROUTES
from tests.support.procs import ROOT, GatewayHandle

pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_loadtest_closed_and_open_loop(gateway: GatewayHandle, tmp_path: Path) -> None:
    out, plot = tmp_path / "lt.json", tmp_path / "lt.png"
    r = _run(
        [
            sys.executable,
            "-m",
            "deploy.loadtest",
            "--url",
            gateway.url,
            "--routes",
            "all",
            "--concurrency",
            "1",
            "4",
            "--rate",
            "40",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--max-new-tokens",
            "8",
            "--no-progress",
            "--out",
            str(out),
            "--plot",
            str(plot),
        ]
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    classify = [x for x in report["results"] if x["route"] == "classify"]
    assert [x.get("concurrency", x.get("rate_rps")) for x in classify] == [1, 4, 40.0]
    assert all(x["failed"] == 0 and x["ok"] > 0 and x["latency_ms"]["p99"] > 0 for x in report["results"])
    served = {x["route"] for x in report["results"]}
    # Every route is either measured or skipped with a reason (routes land one by one).
    assert served | set(report["skipped"]) == set(ROUTES)
    assert {"denoise", "sample", "chat"} <= served  # the fixture serves them: each is loaded, not skipped
    for x in report["results"]:
        if x["route"] == "generate":
            assert x["tokens"] > 0 and x["ttft_ms"]["p50"] > 0
    assert plot.stat().st_size > 0


def test_locustfile_runs_headless(gateway: GatewayHandle, tmp_path: Path) -> None:
    r = _run(
        [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            "deploy/loadtest/locustfile.py",
            "--headless",
            "--host",
            gateway.url,
            "-u",
            "2",
            "-r",
            "2",
            "--run-time",
            "5s",  # 2 s saw no completed request once on a loaded 2-core box (users spawn at 2/s)
            "--only-summary",
            "--csv",
            str(tmp_path / "locust"),
            "--exit-code-on-error",
            "1",
        ],
        timeout=60,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stats = (tmp_path / "locust_stats.csv").read_text()
    assert "classify" in stats


def test_bench_tiny(model_repository: Path, classifier_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = _run(
        [
            sys.executable,
            "-m",
            "deploy.bench",
            "--models",
            "small",
            "--model-repository",
            str(model_repository / "cpu"),
            "--checkpoint",
            str(classifier_ckpt),
            "--concurrency",
            "2",
            "--duration",
            "0.4",
            "--warmup",
            "0.1",
            "--repeats",
            "1",
            "--batch-sizes",
            "1",
            "4",
            "--limit-seconds",
            "0.1",
            "--gen-tokens",
            "4",
            "--skip",
            "client",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--plots",
            str(tmp_path),
            "--no-progress",
        ],
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    small = report["models"]["small"]
    assert small["model"]["weights"] == "trained" and small["limit"]["images_per_s"] > 0
    systems = small["systems"]
    assert set(systems) == {
        "triton_batching",
        "triton_no_batching",
        "gateway",
        "naive_fastapi_onnxruntime",
        "naive_fastapi_torch",
    }
    for name, rows in systems.items():
        assert len(rows) == 1 and rows[0]["failed"] == 0 and rows[0]["ok"] > 0, (name, rows)
    assert systems["triton_batching"][0]["triton"]["requests"] > 0
    assert "gateway/limit" in small["ratios"]["c=2"] and len(small["targets"]) == 5
    int8 = small["int8"]["variants"]
    assert int8["fp32"]["test_accuracy"] > 0.9 and "speedup_vs_fp32" in int8["static"]
    assert "lstm" in report["generation"] and "int8" in report["generation"]
    for kind in ("throughput", "batch_sweep", "latency"):
        assert (tmp_path / f"bench_small_{kind}.png").stat().st_size > 0
