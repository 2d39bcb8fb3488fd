"""Issue 18: large legal requests leave nothing behind, and an oversized one is refused before any work.

RSS of the whole stack (Triton, its Python-backend stubs, the gateway), polled until it settles:
generous bounds (the tiny fixture models are small; what is checked is that a burst's working
memory is returned, not kept as an arena would keep it), and no timing assertions.
"""

from __future__ import annotations

import contextlib
import time

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http

from tests.e2e.test_task_routes import photo, png, post
from tests.support.procs import GatewayHandle, TritonHandle

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def stack_rss(triton: TritonHandle, gateway: GatewayHandle) -> int:
    procs = []
    for pid in (triton.pid, gateway.pid):
        p = psutil.Process(pid)
        procs += [p, *p.children(recursive=True)]
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def settled_rss(triton: TritonHandle, gateway: GatewayHandle, target: int, within_s: float = 30.0) -> int:
    """Poll until RSS is at or below ``target`` (idle trimming runs after 0.5 s) or time runs out."""
    end = time.monotonic() + within_s
    rss = stack_rss(triton, gateway)
    while rss > target and time.monotonic() < end:
        time.sleep(0.5)  # polling a measurement, not waiting for readiness
        rss = stack_rss(triton, gateway)
    return rss


def big_photo(side: int) -> bytes:
    tile = photo(64, 64)
    return png(np.ascontiguousarray(np.tile(tile, (side // 64, side // 64, 1))))


def test_burst_of_large_super_resolution_returns_to_idle(
    triton: TritonHandle, gateway: GatewayHandle
) -> None:
    # Lazily built state (sessions, memory plans, tile shapes) is loaded before the idle figure.
    assert post(gateway.url, "/v1/super-resolve", big_photo(256), scale=2).status_code == 200
    idle = settled_rss(triton, gateway, 0, within_s=2.0)
    with httpx.Client(timeout=300) as client:
        for side, scale in ((1024, 2), (1536, 2), (1024, 2)):
            r = client.post(
                f"{gateway.url}/v1/super-resolve",
                files={"file": ("x.png", big_photo(side), "image/png")},
                params={"scale": scale},
            )
            assert r.status_code == 200, r.text
    peak = stack_rss(triton, gateway)  # right after the burst, before the idle trim
    after = settled_rss(triton, gateway, int(idle * 1.2) + 64 * MB)
    print(f"stack RSS: idle {idle / MB:.0f} MB, after burst {peak / MB:.0f} MB, settled {after / MB:.0f} MB")
    assert after <= idle * 1.2 + 64 * MB, f"idle {idle / MB:.0f} MB -> {after / MB:.0f} MB after the burst"


def test_output_over_the_limit_is_413_before_any_inference(
    triton: TritonHandle, gateway: GatewayHandle
) -> None:
    client = triton_http.InferenceServerClient(triton.http_url)

    def count() -> int:
        stats = client.get_inference_statistics("sr_psnr_x2")["model_stats"]
        return sum(int(s["inference_count"]) for s in stats)

    before = count()
    r = post(gateway.url, "/v1/super-resolve", big_photo(2112), scale=2)  # 4224^2 > 4096^2 output pixels
    assert r.status_code == 413
    assert "above the limit" in r.json()["error"]["message"]
    assert count() == before
