"""Model lifecycle through the admin API: versions, load/unload, canary splits, zero-downtime reload.

Real Triton in explicit model-control mode, the real gateway over sockets. The repository starts
with one version of the classifier; a "retrained" second version (other weights) is
exported into it while everything runs, as a retraining job would.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as gc
from PIL import Image

from deploy.reload_demo import switch_under_load
from tests.support.stack import ADMIN_KEY, Stack, export_classifier_version, start_stack

pytestmark = pytest.mark.slow

# Canary share: 300 requests at p = 0.3 have a standard deviation of 0.026 in the observed share;
# the tolerance is about 4 standard deviations (a false failure about once in 15,000 runs).
CANARY_PERCENT, CANARY_REQUESTS, CANARY_TOLERANCE = 30, 300, 0.10


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle-repo")
    assert export_classifier_version(root) == "1"
    return root


@pytest.fixture(scope="module")
def stack(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(repo, tmp_path_factory.mktemp("lifecycle"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def retrained(repo: Path, stack: Stack) -> str:
    """The second version, exported into the live repository (Triton does not load it by itself)."""
    return export_classifier_version(repo, variant=1)


@pytest.fixture()
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with stack.admin() as c:
        yield c


def serve_versions(admin: httpx.Client, *versions: int) -> None:
    r = admin.post("/admin/models/classifier/load", json={"versions": list(versions)})
    assert r.status_code == 200, r.text
    ready = [v["version"] for v in r.json()["versions"] if v["state"] == "READY"]
    assert ready == [str(v) for v in versions]
    admin.delete("/admin/models/classifier/traffic")


def png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def classify(c: httpx.Client, **kwargs: object) -> httpx.Response:
    return c.post(
        "/v1/classify",
        content=png(),
        headers={"content-type": "image/png", **kwargs.pop("headers", {})},
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- admin


def test_admin_routes_refuse_without_the_admin_key(stack: Stack) -> None:
    for method, path in [
        ("GET", "/admin/models"),
        ("POST", "/admin/models/classifier/unload"),
        ("PUT", "/admin/models/classifier/traffic"),
    ]:
        r = httpx.request(method, f"{stack.url}{path}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = httpx.request(method, f"{stack.url}{path}", headers={"X-Admin-Key": "wrong"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert httpx.get(f"{stack.url}/admin/models", headers={"X-Admin-Key": ADMIN_KEY}).status_code == 200
    assert not any(p.startswith("/admin") for p in httpx.get(f"{stack.url}/openapi.json").json()["paths"])
    assert httpx.get(f"{stack.url}/readyz").status_code == 200  # refusals cost the service nothing


def test_admin_lists_models_and_versions(stack: Stack, admin: httpx.Client, retrained: str) -> None:
    serve_versions(admin, 1)
    models = {m["name"]: m for m in admin.get("/admin/models").json()["models"]}
    states = {v["version"]: v["state"] for v in models["classifier"]["versions"]}
    assert states["1"] == "READY" and models["classifier"]["traffic"] is None
    r = admin.put(
        "/admin/models/classifier/traffic", json={"stable": "1", "canary": "1", "canary_percent": 5}
    )
    assert r.status_code == 422 and "error" in r.json()
    r = admin.put(
        "/admin/models/classifier/traffic", json={"stable": "1", "canary": "2", "canary_percent": 101}
    )
    assert r.status_code == 422


def test_unload_and_load_apply_without_restart(stack: Stack, admin: httpx.Client) -> None:
    serve_versions(admin, 1)
    assert admin.post("/admin/models/classifier/unload").status_code == 200
    with httpx.Client(base_url=stack.url) as c:
        assert classify(c).status_code in (404, 503)  # no classifier served: a JSON refusal
        assert "error" in classify(c).json()
        serve_versions(admin, 1)
        r = classify(c)
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"


# ---------------------------------------------------------------------------------------------- versions


def test_pinned_versions_and_the_version_header(stack: Stack, admin: httpx.Client, retrained: str) -> None:
    serve_versions(admin, 1, int(retrained))
    with httpx.Client(base_url=stack.url) as c:
        for v in ("1", retrained):
            r = classify(c, params={"version": v})
            assert r.status_code == 200 and r.json()["model_version"] == v == r.headers["x-model-version"]
        r = classify(c)
        assert r.json()["model_version"] == retrained  # unpinned, no split: the newest
        assert classify(c, params={"version": "abc"}).status_code == 422
        r = classify(c, params={"version": "9"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_canary_split_is_observed_on_every_front_door(
    stack: Stack, admin: httpx.Client, retrained: str
) -> None:
    serve_versions(admin, 1, int(retrained))
    split = {"stable": "1", "canary": retrained, "canary_percent": CANARY_PERCENT}
    assert admin.put("/admin/models/classifier/traffic", json=split).json()["warnings"] == []
    per_door: dict[str, Counter[str]] = {"task": Counter(), "kserve-http": Counter(), "grpc": Counter()}
    body = {"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "UINT8", "data": [0] * 1024}]}
    g = gc.InferenceServerClient(stack.grpc_url)
    inp = gc.InferInput("image", [1, 1, 32, 32], "UINT8")
    inp.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.uint8))
    with httpx.Client(base_url=stack.url) as c:
        for _ in range(CANARY_REQUESTS // 3):
            r = classify(c)
            assert r.status_code == 200
            per_door["task"][r.headers["x-model-version"]] += 1
            r = c.post("/v2/models/classifier/infer", json=body)
            assert r.status_code == 200
            per_door["kserve-http"][r.headers["x-model-version"]] += 1
            per_door["grpc"][g.infer("classifier", [inp]).get_response().model_version] += 1
    total = sum(per_door.values(), Counter())
    share = total[retrained] / sum(total.values())
    assert set(total) == {"1", retrained}
    assert abs(share - CANARY_PERCENT / 100) <= CANARY_TOLERANCE, (share, per_door)
    assert all(len(counts) == 2 for counts in per_door.values()), per_door  # each door splits
    admin.delete("/admin/models/classifier/traffic")


def test_sticky_canary_keeps_a_key_on_one_version(stack: Stack, admin: httpx.Client, retrained: str) -> None:
    serve_versions(admin, 1, int(retrained))
    admin.put(
        "/admin/models/classifier/traffic",
        json={"stable": "1", "canary": retrained, "canary_percent": 50, "sticky_header": "X-Canary-Key"},
    )
    with httpx.Client(base_url=stack.url) as c:
        for key in ("alice", "bob", "carol"):
            seen = {classify(c, headers={"X-Canary-Key": key}).headers["x-model-version"] for _ in range(10)}
            assert len(seen) == 1, (key, seen)
        by_key = Counter(
            classify(c, headers={"X-Canary-Key": f"user-{i}"}).headers["x-model-version"] for i in range(100)
        )
    assert set(by_key) == {"1", retrained}  # keys spread over both versions
    admin.delete("/admin/models/classifier/traffic")


def test_split_never_routes_to_a_version_that_is_not_ready(stack: Stack, admin: httpx.Client) -> None:
    serve_versions(admin, 1)
    r = admin.put(
        "/admin/models/classifier/traffic", json={"stable": "1", "canary": "7", "canary_percent": 100}
    )
    assert r.status_code == 200 and r.json()["warnings"]
    with httpx.Client(base_url=stack.url) as c:
        assert {classify(c).headers["x-model-version"] for _ in range(20)} == {"1"}
    admin.delete("/admin/models/classifier/traffic")


# ---------------------------------------------------------------------------------------------- reload


def test_reload_under_load_has_zero_failures(
    stack: Stack, admin: httpx.Client, retrained: str, tmp_path: Path
) -> None:
    serve_versions(admin, 1)  # the retrained version is on disk, not loaded: as after an export
    report = asyncio.run(
        switch_under_load(
            stack.url,
            ADMIN_KEY,
            "classifier",
            to_version=retrained,
            concurrency=4,
            warmup_s=1.0,
            step_s=0.5,
            settle_s=1.0,
            max_requests=5000,
        )
    )
    (tmp_path / "reload.json").write_text(str(report))
    print(
        f"reload under load: {report['requests']} requests, {report['failures']} failures, "
        f"p99 during the switch {report['latency']['during_switch'].get('p99_ms')} ms"
    )
    assert report["failures"] == 0, report["statuses"]
    assert report["latency"]["during_switch"]["requests"] > 0
    assert report["ready_versions_after"] == [retrained]
    assert set(report["versions_served"]["after"]) <= {retrained}
    assert set(report["versions_served"]["before"]) == {"1"}
