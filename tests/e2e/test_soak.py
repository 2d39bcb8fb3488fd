"""The soak tool in short: ``deploy.soak`` against the session stack, a few seconds long."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy import soak
from tests.support.procs import GatewayHandle, TritonHandle

pytestmark = pytest.mark.slow


def test_short_soak_has_no_errors_and_writes_its_report(
    gateway: GatewayHandle, triton: TritonHandle, tmp_path: Path
) -> None:
    code = soak.main(
        [
            "--url",
            gateway.url,
            "--gateway-pid",
            str(gateway.proc.pid),
            "--triton-pid",
            str(triton.proc.pid),
            "--duration",
            "8",
            "--window",
            "2",
            "--capacity-seconds",
            "2",
            "--concurrency",
            "4",
            "--fraction",
            "0.3",
            "--rss-noise-mb",
            "64",
            # In 8 s the last windows (the verdict's "end") still hold a mixed-in request in flight: a
            # 512-px one keeps ~70 MiB of working set in its stub then (seen on a fresh clone), more
            # than the noise allowed; 256 px keeps the mix while it stays well under it.
            "--mix-sr-side",
            "256",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["total"]["failed"] == 0 and report["total"]["requests"] > 0, report["total"]
    assert len(report["windows"]) >= 3 and report["capacity_rps"] > 0
    mem = report["memory"][-1]
    assert mem["gateway"] > 0 and mem["triton"] > 0 and mem["triton_stubs_total"] > 0  # stubs are measured
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert code == 0, report["memory_verdict"]


def test_embedded_stack_serves_then_stops_both(model_repository: Path, tmp_path: Path) -> None:
    """The soak's own stack (serving/harness.py): Triton + ``python -m serving.gateway``, then gone."""
    import httpx
    import psutil

    with soak.embedded_stack(model_repository / "cpu", tmp_path) as stack:
        assert httpx.get(stack.url + "/readyz", timeout=5).status_code == 200
        pids = [stack.gateway_pid, stack.triton_pid]
        assert all(pid is not None and psutil.pid_exists(pid) for pid in pids)
    assert (tmp_path / "soak-triton.log").exists() and (tmp_path / "soak-gateway.log").exists()
    for pid in pids:
        assert pid is not None and (not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")
