"""Zero-downtime version switch under load: load a new model version and move traffic to it while a
bounded asyncio load runs against the gateway; report requests, failures and latency percentiles
before, during and after the switch.

    # against a running stack (make serve with GATEWAY_ADMIN_KEY set), after exporting a retrained
    # model (a new version folder in the repository, not loaded yet):
    python -m deploy.reload_demo --gateway http://127.0.0.1:8080 --admin-key "$GATEWAY_ADMIN_KEY"

    # self-contained: its own Triton + gateway on free ports from a repository holding >= 2
    # versions of the model (it serves the older one first, then switches to the newest):
    python -m deploy.reload_demo --repository build/model_repository/cpu

The switch, all through the admin API, nothing restarted:

1. split ``stable=old, canary=new, 0 %``: traffic stays on the old version;
2. load ``versions=[old, new]``: Triton loads the new version beside the old one;
3. ramp the canary share (10 %, 50 %, 100 % by default);
4. load ``versions=[new]``: the old version leaves the routing, then Triton unloads it;
5. remove the split: unpinned requests go to Triton's newest version, the new one.

"During the switch" is every request that started between step 1 and the end of step 5.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np


@dataclass
class Sample:
    start: float
    latency: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    version: str


@dataclass
class LoadRun:
    samples: list[Sample] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def sample_png(size: int = 32, seed: int = 0) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


async def load(
    client: httpx.AsyncClient, run: LoadRun, model: str, body: bytes, concurrency: int, max_requests: int
) -> None:
    """``concurrency`` closed-loop workers on /v1/classify until ``run.stop`` or ``max_requests``."""
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while not run.stop.is_set() and sent < max_requests:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    "/v1/classify",
                    params={"model": model, "top_k": 1},
                    content=body,
                    headers={"content-type": "image/png"},
                )
                status, version = r.status_code, r.headers.get("x-model-version", "")
            except httpx.HTTPError:
                status, version = 0, ""
            run.samples.append(Sample(t0, time.perf_counter() - t0, status, version))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def percentiles(samples: list[Sample]) -> dict[str, Any]:
    lat = sorted(s.latency for s in samples)
    if not lat:
        return {"requests": 0}

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3, 2)

    return {"requests": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(lat[-1] * 1e3, 2)}


async def ready_versions(admin: httpx.AsyncClient, model: str) -> list[str]:
    r = await admin.get(f"/admin/models/{model}")
    r.raise_for_status()
    return [v["version"] for v in r.json()["versions"] if v["state"] == "READY"]


async def switch_under_load(
    gateway: str,
    admin_key: str,
    model: str = "classifier",
    to_version: str | None = None,
    concurrency: int = 4,
    warmup_s: float = 2.0,
    ramp: tuple[int, ...] = (10, 50, 100),
    step_s: float = 1.0,
    settle_s: float = 2.0,
    retire_old: bool = True,
    max_requests: int = 20_000,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=gateway, timeout=600, headers={"X-Admin-Key": admin_key}) as admin,
    ):
        ready = await ready_versions(admin, model)
        if not ready:
            raise RuntimeError(f"model {model!r} has no READY version")
        old = ready[-1]
        new = to_version or str(int(old) + 1)
        if new == old:
            raise RuntimeError(f"version {new} already serves {model!r}: nothing to switch to")
        run = LoadRun()
        loader = asyncio.create_task(load(client, run, model, sample_png(), concurrency, max_requests))
        steps: list[dict[str, Any]] = []

        async def step(action: str, method: str, path: str, body: dict[str, Any] | None = None) -> None:
            t0 = time.perf_counter()
            r = await admin.request(method, path, json=body)
            if r.status_code >= 400:
                raise RuntimeError(f"{action}: {r.status_code} {r.text}")
            steps.append({"action": action, "seconds": round(time.perf_counter() - t0, 3)})

        try:
            await asyncio.sleep(warmup_s)  # load phase "before", not a wait for a server
            t_begin = time.perf_counter()
            traffic = f"/admin/models/{model}/traffic"
            await step(
                f"hold traffic on {old}", "PUT", traffic, {"stable": old, "canary": new, "canary_percent": 0}
            )
            await step(
                f"load {new} beside {old}",
                "POST",
                f"/admin/models/{model}/load",
                {"versions": [int(old), int(new)]},
            )
            for pct in ramp:
                await step(
                    f"canary {pct}%", "PUT", traffic, {"stable": old, "canary": new, "canary_percent": pct}
                )
                await asyncio.sleep(step_s)  # pacing of the ramp
            if retire_old:
                await step(f"retire {old}", "POST", f"/admin/models/{model}/load", {"versions": [int(new)]})
            await step("remove split", "DELETE", traffic)
            t_end = time.perf_counter()
            await asyncio.sleep(settle_s)  # load phase "after"
        finally:
            run.stop.set()
            await loader
        served_after = await ready_versions(admin, model)

    samples = run.samples
    before = [s for s in samples if s.start < t_begin]
    during = [s for s in samples if t_begin <= s.start <= t_end]
    after = [s for s in samples if s.start > t_end]
    failures = [s for s in samples if s.status != 200]
    return {
        "model": model,
        "from_version": old,
        "to_version": new,
        "concurrency": concurrency,
        "requests": len(samples),
        "failures": len(failures),
        "statuses": dict(Counter(str(s.status) for s in samples)),
        "versions_served": {
            "before": dict(Counter(s.version for s in before)),
            "during_switch": dict(Counter(s.version for s in during)),
            "after": dict(Counter(s.version for s in after)),
        },
        "latency": {
            "before": percentiles(before),
            "during_switch": percentiles(during),
            "after": percentiles(after),
        },
        "switch_seconds": round(t_end - t_begin, 3),
        "steps": steps,
        "ready_versions_after": served_after,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.reload_demo",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--gateway", default="http://127.0.0.1:8080")
    p.add_argument("--admin-key", default=None, help="the gateway's GATEWAY_ADMIN_KEY")
    p.add_argument("--repository", type=Path, help="start an own stack on free ports from this repository")
    p.add_argument("--model", default="classifier")
    p.add_argument("--to-version", default=None, help="default: the newest ready version + 1")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--step-s", type=float, default=1.0, help="seconds per canary step")
    p.add_argument("--settle-s", type=float, default=2.0)
    p.add_argument("--ramp", default="10,50,100", help="canary percentages, in order")
    p.add_argument("--keep-old", action="store_true", help="do not unload the old version at the end")
    p.add_argument("--max-requests", type=int, default=20_000, help="hard bound on the load")
    p.add_argument("--out", type=Path, default=Path("reports/reload_demo.json"))
    args = p.parse_args(argv)
    stack = None
    gateway, key, to_version = args.gateway, args.admin_key, args.to_version
    try:
        if args.repository:
            from deploy.stack import start_local_stack

            stack = start_local_stack(args.repository, Path(tempfile.mkdtemp(prefix="reload-demo-")))
            gateway, key = stack.gateway_url, stack.admin_key
            with httpx.Client(base_url=gateway, headers={"X-Admin-Key": key}, timeout=600) as admin:
                ready = [
                    v["version"]
                    for v in admin.get(f"/admin/models/{args.model}").json()["versions"]
                    if v["state"] == "READY"
                ]
                if len(ready) < 2:
                    print(
                        f"error: {args.model} needs two versions in {args.repository}: retrain (another "
                        "--seed) "
                        "and export",
                        file=sys.stderr,
                    )
                    return 2
                to_version = to_version or ready[-1]
                admin.post(
                    f"/admin/models/{args.model}/load", json={"versions": [int(ready[-2])]}
                ).raise_for_status()
        if not key:
            p.error("--admin-key is required against a running gateway")
        report = asyncio.run(
            switch_under_load(
                gateway,
                key,
                args.model,
                to_version,
                args.concurrency,
                args.warmup_s,
                tuple(int(x) for x in args.ramp.split(",") if x),
                args.step_s,
                args.settle_s,
                not args.keep_old,
                args.max_requests,
            )
        )
    finally:
        if stack is not None:
            stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
