"""Property-based run of the gateway's own OpenAPI schema (schemathesis) against the real process.

``st run`` fetches /openapi.json from the session gateway (real Triton behind it) and sends a
bounded number of generated inputs per operation, valid and invalid, over a socket, through all
phases (schema examples, boundary coverage incl. unsupported methods, fuzzing, stateful). Every
check schemathesis 4.32 has: no 5xx (see tests/support/schema_hooks.py for the one allowed 504),
status codes, content types, headers and bodies as documented, invalid input refused with a 4xx,
valid input accepted (the document is exact: model enums per task, bounds and patterns from the
validating definitions; the hooks name the three facts a JSON Schema cannot state), missing
headers, methods, Allow, auth and the stateful resource checks. The counts go to
reports/schema_fuzz.json, every failure with its reproduction to reports/schema_fuzz.txt.

(The CLI, not the pytest plugin: schemathesis 4.32's ``from_fixture`` reads a private pytest
attribute that pytest 9 no longer has.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.procs import ROOT, GatewayHandle

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25  # per operation and phase: bounded, so the run stays well under a minute
CHECKS = [
    "server_error_unless_own_deadline",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance_within_schema",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
]


def test_gateway_conforms_to_its_openapi_schema(gateway: GatewayHandle, tmp_path: Path) -> None:
    stats, doc = tmp_path / "stats.json", tmp_path / "openapi.json"
    doc.write_bytes(httpx.get(f"{gateway.url}/openapi.json", timeout=30).content)
    st = Path(sys.executable).parent / "st"
    cmd = [
        str(st),
        "--config-file",
        str(ROOT / "tests" / "support" / "schemathesis.toml"),
        "run",
        f"{gateway.url}/openapi.json",
        "--workers",
        "1",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--checks",
        ",".join(CHECKS),
        "--seed",
        "20260101",
        "--generation-deterministic",
        "--request-timeout",
        "60",
        "--continue-on-failure",
        "--no-color",
        "--warnings",
        "off",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.schema_hooks",
        "SCHEMA_FUZZ_STATS": str(stats),
        "SCHEMA_FUZZ_DOC": str(doc),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    out = proc.stdout + proc.stderr
    counts = json.loads(stats.read_text()) if stats.exists() else {}
    generated = re.search(r"(\d+) generated", out)
    report = {
        "max_examples_per_operation": MAX_EXAMPLES,
        "cases_generated": int(generated.group(1)) if generated else None,
        "responses_by_class": counts,
        "exit_code": proc.returncode,
    }
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "schema_fuzz.json").write_text(json.dumps(report, indent=2))
    (ROOT / "reports" / "schema_fuzz.txt").write_text(out)  # every failure with its reproduction
    assert proc.returncode == 0, out[-6000:]
    assert counts.get("responses", 0) > 100 and counts.get("5xx", 0) == counts.get("504_own_deadline", 0)
