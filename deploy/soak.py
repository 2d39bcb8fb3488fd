"""Soak test: hold the stack at a fixed fraction of its capacity for a while; errors and memory over time.

    python -m deploy.soak                                 # starts its own Triton + gateway (embedded)
    python -m deploy.soak --duration 600 --fraction 0.6   # longer, harder
    python -m deploy.soak --url http://127.0.0.1:8080 --gateway-pid P --triton-pid Q   # a running stack

1. Capacity: a short closed loop at ``--concurrency`` (answers/s).
2. Soak: open-loop arrivals at ``--fraction`` x capacity for ``--duration`` seconds, in windows of
   ``--window`` seconds (deploy.loadtest's engine: latency counts from the scheduled send time).
3. Per window: requests, errors by status, throughput, latency percentiles, and the resident
   memory (RSS) of the gateway, Triton and each of Triton's child processes (the Python-backend
   stubs that hold the onnxruntime sessions).
4. Mixed in (issue 18; ``--no-mix`` to leave out): throughout the capacity run and the soak, one
   closed loop of large super-resolution requests (``--mix-sr-side`` at ``--mix-sr-scale``) and one of
   long streamed generations (``--mix-tokens`` new tokens), so the memory curve sees the requests
   that need the most; their answers are counted apart (``mix``) and must all succeed too.
5. RSS over time: the stack's total (Triton + its stubs + the gateway) every ``--rss-interval``
   seconds (``rss_curve``); flat after warm-up = the median of the last quartile of the curve
   against the median of the first (``rss_quartiles``), allowed ``max(--rss-noise-mb, 10 %)``.
6. Verdict: no errors, the curve flat, and no process grew beyond noise: RSS at the end (median
   of the last windows) against RSS after the first window (warm-up: allocator arenas, caches,
   connection pools settle there), allowed ``max(--rss-noise-mb, 10 %)``.

Writes ``<out>/soak.json`` and ``<out>/soak.png``; exits 1 when the verdict fails. Traffic goes
only to 127.0.0.1 (or ``--url``), bounded by the duration; everything started here is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deploy.loadtest.engine import run_closed, run_open
from deploy.loadtest.report import summarise
from deploy.loadtest.targets import HttpTarget, image_request
from serving import harness

MiB = 1024 * 1024


@dataclass
class Stack:
    url: str
    gateway_pid: int | None
    triton_pid: int | None


@contextlib.contextmanager
def embedded_stack(repo: Path, workdir: Path) -> Iterator[Stack]:
    """Triton and the gateway (``python -m serving.gateway``, as deployed) on free loopback ports."""
    with harness.start_stack(
        repo,
        workdir,
        model_control="none",
        load_models=(),
        grpc_door=False,
        entry="main",
        triton_log="soak-triton.log",
        gateway_log="soak-gateway.log",
        triton_timeout=180,
    ) as stack:
        yield Stack(stack.url, stack.gateway.pid, stack.triton.pid)


def rss_mib(pid: int | None, children: bool = False) -> dict[str, float]:
    """RSS in MiB of ``pid`` (and each child, keyed ``name:pid``); {} if it is gone."""
    if pid is None:
        return {}
    try:
        proc = psutil.Process(pid)
        out = {"main": proc.memory_info().rss / MiB}
        if children:
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    out[f"{child.name()}:{child.pid}"] = child.memory_info().rss / MiB
        return out
    except psutil.Error:
        return {}


def memory_sample(stack: Stack) -> dict[str, float]:
    sample = {"gateway": rss_mib(stack.gateway_pid).get("main", float("nan"))}
    triton = rss_mib(stack.triton_pid, children=True)
    if triton:
        sample["triton"] = triton.pop("main")
        sample["triton_stubs_total"] = sum(triton.values())
        sample.update({f"stub {k}": v for k, v in triton.items()})
    return {k: round(v, 2) for k, v in sample.items()}


def memory_verdict(samples: list[dict[str, float]], noise_mb: float, tail: int = 3) -> dict[str, Any]:
    """Per process: baseline after the first window vs the median of the last ``tail`` windows."""
    out: dict[str, Any] = {}
    if len(samples) < 3:
        return out
    base, rest = samples[1], samples[-tail:]
    for name, start in base.items():
        if name == "t_s":
            continue
        values = [s[name] for s in rest if name in s]
        if not values:
            continue
        end = statistics.median(values)
        allowed = max(noise_mb, 0.10 * start)
        out[name] = {
            "baseline_mib": start,
            "end_mib": round(end, 2),
            "growth_mib": round(end - start, 2),
            "allowed_mib": round(allowed, 2),
            "ok": end - start <= allowed,
        }
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wins = report["windows"]
    t = [w["t_end_s"] / 60 for w in wins]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [w["throughput_rps"] for w in wins], marker="o", label="answers/s")
    ax.axhline(report["target_rps"], color="grey", ls="--", label=f"target {report['target_rps']:.0f}/s")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.bar(t, [w["failed"] for w in wins], width=0.02, color="tab:red", alpha=0.6, label="errors")
    ax2.set_ylabel("errors per window")
    ax2.set_ylim(0, max(1, *(w["failed"] for w in wins)))
    ax.legend(loc="lower left")
    ax.set_title(
        f"soak: {report['fraction']:.0%} of capacity ({report['capacity_rps']:.0f}/s), "
        f"{report['total']['requests']} requests, {report['total']['failed']} errors"
    )
    ax = axes[1]
    for p in ("p50", "p95", "p99"):
        ax.plot(t, [(w["latency_ms"] or {}).get(p) for w in wins], marker=".", label=p)
    ax.set_ylabel("latency (ms)")
    ax.legend()
    ax = axes[2]
    curve = report.get("rss_curve") or report["memory"]
    ct = [m["t_s"] / 60 for m in curve]
    if "total" in curve[0]:
        ax.plot(ct, [m["total"] for m in curve], lw=1.5, color="black", label="stack total")
    for name in ("gateway", "triton", "triton_stubs_total"):
        ax.plot(ct, [m.get(name) for m in curve], lw=1, label=name)
    q = report.get("rss_quartiles") or {}
    if q:
        ax.axhline(q["first_quartile_median_mib"], color="grey", ls=":", lw=1, label="first quartile median")
        ax.axhline(q["last_quartile_median_mib"], color="tab:red", ls=":", lw=1, label="last quartile median")
    mix = report.get("mix")
    if mix:
        ax.set_title(
            f"RSS over time; mixed in: {mix['requests']} large SR / long generations, {mix['failed']} failed"
        )
    ax.set_ylabel("RSS (MiB)")
    ax.set_xlabel("minutes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stack_total_mib(stack: Stack) -> dict[str, float]:
    """One point of the RSS curve: the stack's total and its parts, MiB."""
    m = memory_sample(stack)
    parts = {k: m.get(k, 0.0) for k in ("gateway", "triton", "triton_stubs_total")}
    parts = {k: (0.0 if v != v else v) for k, v in parts.items()}  # NaN: the process is gone
    return {"total": round(sum(parts.values()), 2), **parts}


def quartiles(curve: list[dict[str, float]], noise_mb: float, key: str = "total") -> dict[str, Any]:
    """Median of the first and of the last quarter of the curve (time-ordered): flat when the last is
    within ``max(noise_mb, 10 %)`` of the first."""
    values = [p[key] for p in curve if key in p]
    if len(values) < 4:
        return {}
    q = len(values) // 4
    first, last = statistics.median(values[:q]), statistics.median(values[-q:])
    allowed = max(noise_mb, 0.10 * first)
    return {
        "first_quartile_median_mib": round(first, 2),
        "last_quartile_median_mib": round(last, 2),
        "growth_mib": round(last - first, 2),
        "allowed_mib": round(allowed, 2),
        "min_mib": round(min(values), 2),
        "max_mib": round(max(values), 2),
        "ok": last - first <= allowed,
    }


class Mix:
    """Closed loops of the heaviest legal requests beside the soak's load: large super-resolution and long
    streamed generation, one in flight each, a pause between."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        from deploy.loadtest.targets import generate_request, synthetic_png

        sr = image_request(
            "super-resolve",
            synthetic_png(args.mix_sr_side, 3),
            params={"scale": args.mix_sr_scale},
        )
        gen = generate_request("ROMEO:\n", args.mix_tokens)
        for spec in (sr, gen):
            if args.api_key:
                spec.headers["Authorization"] = f"Bearer {args.api_key}"
        self.targets = [
            HttpTarget(url, sr, client="aiohttp", timeout_s=300.0, name="mix:super-resolve"),
            HttpTarget(url, gen, client="aiohttp", timeout_s=300.0, name="mix:generate"),
        ]
        self.pause = args.mix_pause
        self.counts: dict[str, dict[str, int]] = {t.name: {} for t in self.targets}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self, target: HttpTarget) -> None:
        while not self._stop.is_set():
            try:
                status = (await target.call()).status
            except Exception as exc:  # counted as a failure, the loop goes on
                status = f"exc:{type(exc).__name__}"
            tally = self.counts[target.name]
            tally[status] = tally.get(status, 0) + 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.pause)

    async def start(self) -> None:
        for t in self.targets:
            await t.open(2)
        self._tasks = [asyncio.create_task(self._loop(t)) for t in self.targets]

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self.targets:
            await t.close()
        failed = sum(n for c in self.counts.values() for s, n in c.items() if not s.startswith("2"))
        return {
            "statuses": self.counts,
            "requests": sum(sum(c.values()) for c in self.counts.values()),
            "failed": failed,
        }


async def sample_curve(stack: Stack, curve: list[dict[str, float]], t0: float, every: float) -> None:
    while True:
        curve.append({"t_s": round(time.monotonic() - t0, 2), **stack_total_mib(stack)})
        await asyncio.sleep(every)  # a sampling period, not a readiness wait


async def soak(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    spec = image_request(args.route, model=args.model)
    if args.api_key:
        spec.headers["Authorization"] = f"Bearer {args.api_key}"
    target = HttpTarget(stack.url, spec, client=args.client, timeout_s=30.0)
    await target.open(max(args.concurrency, 64))
    mix = Mix(stack.url, args) if args.mix else None
    curve: list[dict[str, float]] = []
    sampler: asyncio.Task[None] | None = None
    mix_report: dict[str, Any] | None = None
    try:
        if mix is not None:  # before the capacity run: the capacity is measured beside the mix
            await mix.start()
        cap = summarise(await run_closed(target, args.concurrency, args.capacity_seconds, warmup_s=0.5))
        capacity = cap["throughput_rps"]
        if cap["failed"] or capacity <= 0:
            raise SystemExit(f"capacity run failed: {cap}")
        rate = args.fraction * capacity
        print(
            f"capacity {capacity:.1f}/s at concurrency {args.concurrency}; soaking at {rate:.1f}/s "
            f"for {args.duration:.0f} s",
            flush=True,
        )
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample_curve(stack, curve, t0, args.rss_interval))
        memory = [{"t_s": 0.0, **memory_sample(stack)}]
        windows: list[dict[str, Any]] = []
        i = 0
        while time.monotonic() - t0 < args.duration - 1e-3:
            span = min(args.window, args.duration - (time.monotonic() - t0))
            run = await run_open(target, rate, span, seed=i, max_in_flight=256)
            row = summarise(run)
            row["t_end_s"] = round(time.monotonic() - t0, 2)
            windows.append(row)
            memory.append({"t_s": row["t_end_s"], **memory_sample(stack)})
            lat = row["latency_ms"] or {}
            print(
                f"  t={row['t_end_s']:7.1f}s  {row['requests']:6d} req  {row['failed']:3d} err  "
                f"{row['throughput_rps']:7.1f}/s  p50 {lat.get('p50', 0):7.2f} ms  "
                f"p99 {lat.get('p99', 0):7.2f} ms  "
                f"gateway {memory[-1].get('gateway', 0):.0f} MiB  "
                f"triton {memory[-1].get('triton', 0):.0f} MiB"
                f" + stubs {memory[-1].get('triton_stubs_total', 0):.0f} MiB",
                flush=True,
            )
            i += 1
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if mix is not None:
            mix_report = await mix.stop()
        await target.close()
    total_req = sum(w["requests"] for w in windows)
    total_failed = sum(w["failed"] for w in windows)
    errors: dict[str, int] = {}
    for w in windows:
        for k, v in w["errors"].items():
            errors[k] = errors.get(k, 0) + v
    mem_verdict = memory_verdict(memory, args.rss_noise_mb)
    flat = quartiles(curve, args.rss_noise_mb)
    ok = (
        total_failed == 0
        and total_req > 0
        and all(v["ok"] for v in mem_verdict.values())
        and flat.get("ok", True)
        and (mix_report is None or (mix_report["failed"] == 0 and mix_report["requests"] > 0))
    )
    return {
        "url": stack.url,
        "route": args.route,
        "model": args.model,
        "fraction": args.fraction,
        "capacity_rps": capacity,
        "capacity_run": cap,
        "target_rps": round(rate, 2),
        "duration_s": args.duration,
        "window_s": args.window,
        "total": {"requests": total_req, "failed": total_failed, "errors": errors},
        "windows": windows,
        "memory": memory,
        "memory_verdict": mem_verdict,
        "mix": mix_report,
        "rss_curve": curve,
        "rss_quartiles": flat,
        "ok": ok,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deploy.soak",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", help="a running gateway; default: start an embedded stack")
    p.add_argument("--model-repository", type=Path, default=Path("build/model_repository/cpu"))
    p.add_argument("--gateway-pid", type=int, help="with --url: the gateway's pid (for RSS)")
    p.add_argument("--triton-pid", type=int, help="with --url: Triton's pid (for RSS, stubs included)")
    p.add_argument(
        "--route", default="classify", help="image route of deploy.loadtest (classify, segment, ...)"
    )
    p.add_argument("--model", default=None, help="model name; default: the route's default model")
    p.add_argument("--api-key", default=os.environ.get("SOAK_API_KEY"), help="sent as Bearer token if set")
    p.add_argument("--duration", type=float, default=180.0, help="soak seconds (after the capacity run)")
    p.add_argument("--window", type=float, default=15.0, help="seconds per reporting window")
    p.add_argument("--fraction", type=float, default=0.5, help="of the measured capacity")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop concurrency of the capacity run")
    p.add_argument("--capacity-seconds", type=float, default=5.0)
    p.add_argument("--rss-noise-mb", type=float, default=32.0, help="growth allowed per process (or 10%%)")
    p.add_argument("--client", default="aiohttp", choices=("raw", "aiohttp", "httpx"))
    p.add_argument(
        "--no-mix",
        dest="mix",
        action="store_false",
        help="no large super-resolution / long generation mixed in",
    )
    p.add_argument("--mix-sr-side", type=int, default=512, help="mixed-in super-resolution input side")
    p.add_argument("--mix-sr-scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--mix-tokens", type=int, default=512, help="new tokens per mixed-in generation")
    p.add_argument("--mix-pause", type=float, default=1.0, help="seconds between mixed-in requests")
    p.add_argument("--rss-interval", type=float, default=1.0, help="seconds between points of the RSS curve")
    p.add_argument("--out", type=Path, default=Path("reports"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 < args.fraction <= 1:
        print("error: --fraction must be in (0, 1]", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack_ctx:
        if args.url:
            stack = Stack(args.url.rstrip("/"), args.gateway_pid, args.triton_pid)
        else:
            if not any(args.model_repository.glob("*/config.pbtxt")):
                print(
                    f"error: no models in {args.model_repository}; run `make export` first", file=sys.stderr
                )
                return 2
            print("starting Triton + gateway ...", flush=True)
            stack = stack_ctx.enter_context(embedded_stack(args.model_repository, args.out / "soak-logs"))
        report = asyncio.run(soak(stack, args))
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    try:
        plot(report, args.out / "soak.png")
    except ImportError:  # matplotlib is in the train extra; the JSON report stands alone
        print("matplotlib not installed: no plot", file=sys.stderr)
    t = report["total"]
    print(
        f"soak {'PASSED' if report['ok'] else 'FAILED'}: {t['requests']} requests, {t['failed']} errors "
        f"{t['errors'] or ''}; memory: "
        + ", ".join(
            f"{k} {v['baseline_mib']:.0f}->{v['end_mib']:.0f} MiB"
            for k, v in report["memory_verdict"].items()
            if not k.startswith("stub ")
        )
        + (
            f"; stack total first/last quartile {q['first_quartile_median_mib']:.0f}/"
            f"{q['last_quartile_median_mib']:.0f} MiB"
            if (q := report["rss_quartiles"])
            else ""
        )
        + (
            f"; mixed in {report['mix']['requests']} ({report['mix']['failed']} failed)"
            if report["mix"]
            else ""
        )
        + f"; report {args.out / 'soak.json'}",
        flush=True,
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
