"""A real Prometheus server (Debian's package) scrapes the running gateway and Triton.

After some traffic, PromQL answers the gateway's p99 latency and Triton's nv_inference_count,
and every metric the Grafana dashboards query is one that the live processes really export
(GPU gauges aside: this Triton runs on the CPU).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy.validate import metric_names_in_dashboards
from serving.procutil import free_port, poll
from tests.support.procs import GatewayHandle, TritonHandle

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
GPU_ONLY = re.compile(r"^nv_gpu_")  # exported only when Triton sees a GPU


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, gateway: GatewayHandle, triton: TritonHandle
) -> Iterator[str]:
    if PROMETHEUS is None:  # .ci/install-system-deps.sh installs it; say so rather than skip silently
        pytest.fail(
            "the prometheus binary is missing: run .ci/install-system-deps.sh (apt-get install prometheus)"
        )
    work = tmp_path_factory.mktemp("prometheus")
    gateway_target = gateway.url.removeprefix("http://")
    triton_target = triton.metrics_url.removeprefix("http://").removesuffix("/metrics")
    (work / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gateway
    static_configs: [{{targets: ["{gateway_target}"]}}]
  - job_name: triton
    static_configs: [{{targets: ["{triton_target}"]}}]
""")
    port = free_port()
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, "prometheus", proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def query(url: str, promql: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def numeric(url: str, promql: str) -> float | None:
    result = query(url, promql)
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if np.isnan(value) else value


def send_traffic(gateway: GatewayHandle, n: int = 30) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(buf, format="PNG")
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        for _ in range(n):
            assert c.post(
                "/v1/classify", content=buf.getvalue(), headers={"content-type": "image/png"}
            ).is_success


def test_promql_answers_gateway_p99_and_triton_count(prometheus: str, gateway: GatewayHandle) -> None:
    p99 = "histogram_quantile(0.99, sum by (le) (rate(gateway_request_duration_seconds_bucket[1m])))"
    found: dict[str, float] = {}

    def answered() -> bool:
        send_traffic(gateway, 10)  # keep the rate window non-empty while scrapes accumulate
        for name, expr in (("p99", p99), ("count", 'sum(nv_inference_count{model="classifier"})')):
            value = numeric(prometheus, expr)
            if value is not None:
                found[name] = value
        return len(found) == 2

    poll(answered, 60, "PromQL answers for gateway p99 and nv_inference_count")
    assert 0 < found["p99"] < 60 and found["count"] > 0
    assert {r["metric"]["job"] for r in query(prometheus, "up == 1")} == {"gateway", "triton"}


def exported_names(text: str) -> set[str]:
    """Metric names in a Prometheus exposition, histogram/summary series included."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_dashboards_query_only_metrics_that_are_exported(
    gateway: GatewayHandle, triton: TritonHandle
) -> None:
    send_traffic(gateway, 3)
    live = exported_names(httpx.get(f"{gateway.url}/metrics").text) | exported_names(
        httpx.get(triton.metrics_url).text
    )
    live.add("up")  # Prometheus's own series for every target
    missing = {n for n in metric_names_in_dashboards() - live if not GPU_ONLY.match(n)}
    assert not missing, f"dashboards query metrics nobody exports: {sorted(missing)}"
