"""Overhead of the gateway's KServe front doors against Triton direct: same model, same inputs, one run.

    python -m deploy.frontdoor_bench --repository build/model_repository/cpu      # starts its own stack
    python -m deploy.frontdoor_bench --target triton-http=http:127.0.0.1:8000 \
        --target gateway-http=http:127.0.0.1:8080 --target triton-grpc=grpc:127.0.0.1:8001 \
        --target gateway-grpc=grpc:127.0.0.1:8081 --gateway-pid 1234               # a running stack

Each target is driven by the stock ``tritonclient`` (``http.aio`` / ``grpc.aio``): ``concurrency``
workers send the same binary-tensor request in interleaved rounds (target A, B, C, D, A, B, ...)
so drift of a shared machine spreads over all targets. Per target: requests/s, latency mean, p50,
p99 and, with ``--gateway-pid``, the gateway's CPU milliseconds per request (from /proc: what the
gateway costs, independent of how busy the machine is). Ratios are against the Triton-direct
target of the same protocol. Writes a JSON report. Loopback only; bounded by --requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (and its threads), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def make_caller(
    kind: str, url: str, model: str, x: np.ndarray
) -> tuple[Callable[[], Awaitable[Any]], Any]:
    if kind == "http":
        import tritonclient.http.aio as hc

        client = hc.InferenceServerClient(url, conn_limit=64)
        inp = hc.InferInput("image", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x, binary_data=True)
        out = [hc.InferRequestedOutput("probs", binary_data=True)]
    else:
        import tritonclient.grpc.aio as gc

        client = gc.InferenceServerClient(url)
        inp = gc.InferInput("image", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        out = [gc.InferRequestedOutput("probs")]

    async def call() -> Any:
        return await client.infer(model, [inp], outputs=out)

    return call, client


async def run_round(call: Callable[[], Awaitable[Any]], n: int, concurrency: int, lat: list[float]) -> None:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench(
    targets: dict[str, tuple[str, str]],
    model: str,
    requests: int,
    rounds: int,
    concurrency: int,
    warmup: int,
    gateway_pid: int | None,
) -> dict[str, Any]:
    x = np.random.default_rng(0).integers(0, 256, size=(1, 1, 32, 32), dtype=np.uint8)
    callers = {}
    for label, (kind, url) in targets.items():
        callers[label] = await make_caller(kind, url, model, x)
    results: dict[str, dict[str, Any]] = {label: {"lat": [], "wall": 0.0, "cpu": 0.0} for label in targets}
    try:
        for call, _ in callers.values():  # warm connections, Triton's instances, caches
            await run_round(call, warmup, concurrency, [])
        per_round = max(1, requests // rounds)
        for _ in range(rounds):
            for label, (call, _) in callers.items():
                r = results[label]
                c0, t0 = cpu_seconds(gateway_pid), time.perf_counter()
                await run_round(call, per_round, concurrency, r["lat"])
                r["wall"] += time.perf_counter() - t0
                r["cpu"] += cpu_seconds(gateway_pid) - c0
    finally:
        for _, client in callers.values():
            await client.close()
    report: dict[str, Any] = {}
    for label, r in results.items():
        lat = sorted(r["lat"])
        report[label] = {
            "protocol": targets[label][0],
            "requests": len(lat),
            "throughput_rps": round(len(lat) / r["wall"], 1),
            "latency_ms": {
                "mean": round(statistics.fmean(lat) * 1e3, 3),
                "p50": round(percentile(lat, 0.5) * 1e3, 3),
                "p99": round(percentile(lat, 0.99) * 1e3, 3),
            },
            "gateway_cpu_ms_per_request": round(r["cpu"] / len(lat) * 1e3, 3) if gateway_pid else None,
        }
    for label, row in report.items():
        direct = next(
            (k for k, v in report.items() if v["protocol"] == row["protocol"] and k.startswith("triton")),
            None,
        )
        if direct and direct != label:
            d = report[direct]
            row["vs"] = direct
            row["latency_ratio_mean"] = round(row["latency_ms"]["mean"] / d["latency_ms"]["mean"], 2)
            row["latency_ratio_p99"] = round(row["latency_ms"]["p99"] / d["latency_ms"]["p99"], 2)
            row["throughput_ratio"] = round(row["throughput_rps"] / d["throughput_rps"], 2)
    return report


def parse_targets(items: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for item in items:
        label, _, rest = item.partition("=")
        kind, _, url = rest.partition(":")
        if kind not in ("http", "grpc") or not url:
            raise SystemExit(f"--target {item!r}: expected label=http:host:port or label=grpc:host:port")
        out[label] = (kind, url)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.frontdoor_bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--repository", type=Path, help="start Triton + gateway on free ports from this repository"
    )
    p.add_argument(
        "--target", action="append", default=[], help="label=http:host:port or label=grpc:host:port"
    )
    p.add_argument("--gateway-pid", type=int, help="gateway process id, for CPU per request")
    p.add_argument("--model", default="classifier")
    p.add_argument("--requests", type=int, default=1200, help="per target (bounded load)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("reports/frontdoor_bench.json"))
    args = p.parse_args(argv)
    stack = None
    targets = parse_targets(args.target)
    pid = args.gateway_pid
    if args.repository:
        from deploy.stack import start_local_stack

        stack = start_local_stack(args.repository, Path(tempfile.mkdtemp(prefix="frontdoor-bench-")))
        targets = {
            "triton-http": ("http", stack.triton_http),
            "gateway-http": ("http", stack.gateway_http),
            "triton-grpc": ("grpc", stack.triton_grpc),
            "gateway-grpc": ("grpc", stack.gateway_grpc),
            **targets,
        }
        pid = stack.gateway_pid
    if not targets:
        p.error("give --repository or at least one --target")
    try:
        report = asyncio.run(
            bench(targets, args.model, args.requests, args.rounds, args.concurrency, args.warmup, pid)
        )
    finally:
        if stack is not None:
            stack.stop()
    full = {
        "model": args.model,
        "concurrency": args.concurrency,
        "input": "UINT8 [1,1,32,32], binary tensors",
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "targets": report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(full, indent=2) + "\n")
    print(json.dumps(full, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
