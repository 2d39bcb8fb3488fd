"""Schemathesis hooks for tests/e2e/test_schema_fuzz.py (loaded by ``st`` via SCHEMATHESIS_HOOKS).

One check replaces ``not_a_server_error``: the same, except that a 504 is the right answer when
the request carried its own X-Request-Timeout (the schema allows 0.1 s; a busy machine can miss
it). It also counts every response by status class into the JSON file named by
SCHEMA_FUZZ_STATS, so the test can report how many inputs were tried and how many 5xx came back.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter
from pathlib import Path

import schemathesis
from schemathesis.checks import not_a_server_error

STATS: Counter[str] = Counter()


@schemathesis.check
def server_error_unless_own_deadline(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    STATS["responses"] += 1
    STATS[f"{response.status_code // 100}xx"] += 1
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    if response.status_code == 504 and "x-request-timeout" in headers:
        STATS["504_own_deadline"] += 1
        return None
    return not_a_server_error(ctx, response, case)


@atexit.register
def _dump() -> None:
    path = os.environ.get("SCHEMA_FUZZ_STATS")
    if path:
        Path(path).write_text(json.dumps(dict(STATS), indent=2))
