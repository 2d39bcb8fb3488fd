"""The compose stack in real containers: built without a registry, driven through the Docker SDK.

`make test` starts a Docker daemon where none answers (`make system-deps`, as root). Without one
this tier skips, except under CI=true, where it fails: CI must prove the containers every time.

The stack is the CPU compose as `make up --profile tiny` runs it: the model-builder container trains
with the tiny profile and exports into the compose volume, Triton starts once it has completed and
mounts that volume read-only, the gateway once Triton is healthy, then Prometheus. The builder trains
only the models these tests call (MODELS=..., the compose file's documented builder variable).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

from deploy import containers
from serving.procutil import free_port, poll
from tests.support.faults import digit_png

pytestmark = [pytest.mark.containers, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "build" / "containers-report.json"
MB = 1e6


def docker_client():  # noqa: ANN201 - docker.DockerClient
    import docker

    try:
        c = docker.from_env(timeout=300)
        c.ping()
        return c
    except Exception as exc:  # noqa: BLE001 - no daemon, no socket, no permission: all read the same
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Docker daemon answers ({exc}); make system-deps starts one as root")
        pytest.skip("no Docker daemon answers (make system-deps starts one as root)")


@dataclass
class Stack:
    client: object
    project: str
    compose: list[str]
    env: dict[str, str]
    url: str
    sizes: dict[str, int]
    timings: dict[str, float]
    report: dict = field(default_factory=dict)

    def containers(self, all: bool = False) -> list:  # noqa: A002 - the SDK's own keyword
        label = f"com.docker.compose.project={self.project}"
        return self.client.containers.list(all=all, filters={"label": label})

    def service(self, name: str):  # noqa: ANN201 - docker Container
        (c,) = [c for c in self.containers(all=True) if c.labels.get("com.docker.compose.service") == name]
        c.reload()
        return c

    def logs(self, name: str, tail: int = 40) -> str:
        try:
            return self.service(name).logs(tail=tail).decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - for failure messages only
            return f"<no logs: {exc}>"

    def down(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.compose, "down", "-v", "--remove-orphans", "--timeout", "10"],
            env=self.env,
            capture_output=True,
            text=True,
        )


def seconds_between(started: str, finished: str) -> float:
    """Seconds between two of Docker's RFC 3339 timestamps (nanoseconds: cut to microseconds)."""
    from datetime import datetime

    def parse(t: str) -> datetime:
        head, _, frac = t.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")

    return round((parse(finished) - parse(started)).total_seconds(), 1)


# The served models the tests below call: classify, segment, super-resolve (x2: both generators of
# one run), streaming generate (gpt, the default text model).
TIER_MODELS = "classifier segmenter sr_psnr_x2 sr_gan_x2 gpt"

OVERRIDE = """\
services:
  gateway:
    environment:
      GATEWAY_TRITON_TIMEOUT_S: "5"
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    client = docker_client()
    timings: dict[str, float] = {}
    start = time.monotonic()
    sizes = containers.build_images(with_builder=True)
    timings["images_s"] = time.monotonic() - start

    project = f"tritonstack-test-{os.getpid()}"
    work = ROOT / "build" / f"containers-{project}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    override = work / "override.yml"
    override.write_text(OVERRIDE)
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY_HTTP_PUBLISH": str(http_port),
        "GATEWAY_GRPC_PUBLISH": str(grpc_port),
        "BASE_IMAGE": containers.BASE_IMAGE,
        "MODEL_PROFILE": "tiny",
        "MODELS": TIER_MODELS,
        # Two recipes at a time, one torch thread each: tiny models gain nothing from intra-op threads,
        # and two processes overlap their imports and data generation on 2 cores.
        "TRAIN_JOBS": "2",
        "TRAIN_THREADS": "1",
    }
    s = Stack(
        client=client,
        project=project,
        compose=containers.compose_cmd(gpu=False, project=project, extra_files=(override,)),
        env=env,
        url=f"http://127.0.0.1:{http_port}",
        sizes=sizes,
        timings=timings,
    )
    start = time.monotonic()
    up = subprocess.run(
        [*s.compose, "up", "-d", "--no-build", "--wait", "--wait-timeout", "600"],
        env=env,
        capture_output=True,
        text=True,
    )
    timings["up_to_healthy_s"] = time.monotonic() - start
    try:
        if up.returncode:
            pytest.fail(
                f"compose up failed:\n{up.stderr[-3000:]}\nmodel-builder:\n{s.logs('model-builder')}"
                f"\ntriton:\n{s.logs('triton')}"
            )
        builder = s.service("model-builder").attrs["State"]
        timings["builder_train_export_s"] = seconds_between(builder["StartedAt"], builder["FinishedAt"])
        yield s
    finally:
        s.down()
        shutil.rmtree(work, ignore_errors=True)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps({"timings": timings, **s.report}, indent=2))


def classify(url: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/classify",
        files={"file": ("d.png", digit_png(28), "image/png")},
        params={"top_k": 1},
        timeout=timeout,
    )


def png(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_images_within_their_size_budget(stack: Stack) -> None:
    sizes = {tag: round(size / MB) for tag, size in stack.sizes.items()}
    stack.report["image_mb"] = sizes
    assert sizes["tritonstack/gateway:0.1.0"] <= 350, sizes
    assert sizes["tritonstack/triton:0.1.0-cpu"] <= 1500, sizes


def test_task_routes_through_the_gateway_container(stack: Stack) -> None:
    r = classify(stack.url)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] and r.headers["x-model-version"]

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    files = {"file": ("x.png", png(image), "image/png")}
    r = httpx.post(f"{stack.url}/v1/segment", files=files, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (48, 40) and r.json()["classes"]

    r = httpx.post(f"{stack.url}/v1/super-resolve", files=files, params={"scale": 2}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"

    events = []
    body = {"prompt": "ROMEO:", "max_new_tokens": 12, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as c, connect_sse(c, "POST", f"{stack.url}/v1/generate", json=body) as es:
        events = [(e.event, e.data) for e in es.iter_sse()]
    texts = [json.loads(d)["text"] for ev, d in events if ev == "message"]
    assert texts and events[-1][0] == "done", events
    assert json.loads(events[-1][1])["usage"]["completion_tokens"] == 12


def promql(stack: Stack, query: str) -> list:
    """Ask the Prometheus container itself (it is on the internal network only, never published)."""
    code = (
        "import sys, urllib.parse, urllib.request; "
        "q = urllib.parse.urlencode({'query': sys.argv[1]}); "
        "print(urllib.request.urlopen('http://127.0.0.1:9090/api/v1/query?' + q, timeout=5).read().decode())"
    )
    out = stack.service("prometheus").exec_run(["python3", "-c", code, query])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_answers_promql_for_gateway_p99_and_triton_inferences(stack: Stack) -> None:
    for _ in range(5):
        assert classify(stack.url).status_code == 200
    # Over the cumulative buckets, not rate(): a stack this young has one or two scrapes at most.
    p99 = "histogram_quantile(0.99, sum by (le) (gateway_request_duration_seconds_bucket))"
    found: dict[str, list] = {}

    def scraped() -> bool:  # Prometheus scrapes every 15 s: poll until both series have samples
        found["p99"] = promql(stack, p99)
        found["count"] = promql(stack, "sum(nv_inference_count) > 0")
        return bool(found["p99"]) and found["p99"][0]["value"][1] != "NaN" and bool(found["count"])

    poll(scraped, 90, "gateway p99 and nv_inference_count in Prometheus")
    assert float(found["p99"][0]["value"][1]) > 0
    stack.report["promql"] = {
        "gateway_p99_s": found["p99"][0]["value"][1],
        "nv_inference_count": found["count"],
    }


def test_every_service_is_hardened_and_only_the_gateway_is_published(stack: Stack) -> None:
    seen = {}
    for c in stack.containers(all=True):  # the model-builder too, exited once its job was done
        service = c.labels["com.docker.compose.service"]
        host, cfg = c.attrs["HostConfig"], c.attrs["Config"]
        seen[service] = c
        assert cfg["User"] not in ("", "0", "root") and not cfg["User"].startswith("0:"), (
            service,
            cfg["User"],
        )
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], service
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        published = {p: b for p, b in (c.attrs["NetworkSettings"]["Ports"] or {}).items() if b}
        if service == "gateway":
            assert published and all(b["HostIp"] == "127.0.0.1" for bs in published.values() for b in bs)
        else:
            assert not published, (service, published)
    assert {"model-builder", "triton", "gateway", "prometheus"} <= set(seen), sorted(seen)
    assert seen["model-builder"].attrs["State"]["ExitCode"] == 0
    mounts = {m["Destination"]: m for m in seen["triton"].attrs["Mounts"]}
    assert mounts["/models"]["RW"] is False and mounts["/models"]["Type"] == "volume"


@dataclass
class Load:
    """A bounded load: a few threads, each sending at most ``per_thread`` requests, paced to at most
    one per ``interval_s`` (503s come back in milliseconds), for at most ``duration_s``."""

    url: str
    threads: int = 4
    per_thread: int = 3000
    interval_s: float = 0.02
    duration_s: float = 240.0
    timeout_s: float = 15.0
    stop: threading.Event = field(default_factory=threading.Event)
    results: list = field(default_factory=list)  # (t, status, retry_after, seconds)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        end = time.monotonic() + self.duration_s
        with httpx.Client(timeout=self.timeout_s) as c:
            for _ in range(self.per_thread):
                if self.stop.is_set() or time.monotonic() > end:
                    return
                t0 = time.monotonic()
                try:
                    r = c.post(
                        f"{self.url}/v1/classify",
                        files={"file": ("d.png", digit_png(28), "image/png")},
                        headers={"X-Request-Timeout": "5"},
                    )
                    row = (t0, r.status_code, r.headers.get("retry-after"), time.monotonic() - t0)
                except httpx.TimeoutException:
                    row = (t0, "timeout", None, time.monotonic() - t0)
                except httpx.TransportError as exc:
                    row = (t0, type(exc).__name__, None, time.monotonic() - t0)
                with self.lock:
                    self.results.append(row)
                self.stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))  # pacing


def test_killed_triton_gives_503_with_retry_after_then_recovers_without_a_gateway_restart(
    stack: Stack,
) -> None:
    triton, gateway = stack.service("triton"), stack.service("gateway")
    gateway_started = gateway.attrs["State"]["StartedAt"]
    restarts_before = triton.attrs["RestartCount"]
    load = Load(stack.url)
    workers = [threading.Thread(target=load.run, daemon=True) for _ in range(load.threads)]
    for w in workers:
        w.start()
    poll(lambda: sum(1 for r in load.results if r[1] == 200) >= 8, 60, "load under way")

    # SIGKILL to Triton's process from the host, as the kernel's OOM killer would: `docker kill`
    # counts as a manual stop, which the restart policy rightly leaves alone.
    killed_at = time.monotonic()
    os.kill(triton.attrs["State"]["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        t = stack.service("triton")
        health = t.attrs["State"].get("Health") or {}
        return t.attrs["RestartCount"] > restarts_before and health.get("Status") == "healthy"

    try:
        poll(lambda: any(r[0] > killed_at and r[1] == 503 for r in load.results), 60, "503 after the kill")
        poll(restarted, 240, "Triton restarted by its restart policy and healthy")
        poll(lambda: classify(stack.url, timeout=10).status_code == 200, 120, "gateway serving again")
        recovered_at = time.monotonic()
        n = len(load.results)
        poll(lambda: sum(1 for r in load.results[n:] if r[1] == 200) >= 8, 60, "the load served again")
    finally:
        load.stop.set()
        for w in workers:
            w.join(timeout=30)
    after = [r for r in load.results if r[0] > killed_at]
    statuses = Counter(r[1] for r in after)
    stack.report["fault"] = {
        "requests": len(load.results),
        "after_kill": dict(statuses),
        "recovery_s": round(recovered_at - killed_at, 1),
        "max_latency_s": round(max(r[3] for r in load.results), 2),
    }
    unavailable = [r for r in after if r[1] == 503]
    assert unavailable and all(r[2] for r in unavailable), "every 503 carries Retry-After"
    assert set(statuses) <= {200, 503}, statuses  # no 500, no hang past the client's deadline
    assert any(r[1] == 200 for r in after if r[0] > recovered_at)
    gateway = stack.service("gateway")
    assert gateway.attrs["RestartCount"] == 0 and gateway.attrs["State"]["StartedAt"] == gateway_started


def test_down_leaves_no_container_network_or_volume(stack: Stack) -> None:
    done = stack.down()
    assert done.returncode == 0, done.stderr
    label = {"label": f"com.docker.compose.project={stack.project}"}
    assert stack.containers(all=True) == []
    assert stack.client.networks.list(filters=label) == []
    assert stack.client.volumes.list(filters=label) == []
    again = stack.down()  # down while nothing runs is harmless
    assert again.returncode == 0, again.stderr
