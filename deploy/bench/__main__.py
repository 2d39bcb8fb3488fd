"""Benchmark the serving stack against the in-process limit and the naive alternatives.

All comparisons run in one process tree, one after the other, with the same model and inputs:
  limit        onnxruntime in-process at its best batch size and thread layout (images/s)
  triton       Triton directly over gRPC, dynamic batching on, and a copy with it off
  gateway      the FastAPI gateway end to end (multipart PNG upload -> Triton -> JSON)
  naive_*      FastAPI + PyTorch, FastAPI + onnxruntime, one inference per request, in-process
Every figure is also given as a ratio to the limit. Servers are started on free loopback
ports and stopped afterwards. The client shares the cores with the servers (as on a 2-core
box it must); its CPU per request is in the report.

examples:
  python -m deploy.bench                             # both models, c = 1 8 32 (a few minutes)
  python -m deploy.bench --models small --duration 2 --concurrency 8 32
  python -m deploy.bench --skip naive int8           # only the limit, Triton and the gateway
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.bench import inprocess, stack
from deploy.bench.models import BenchModel, bench_repository, heavy_model, small_model
from deploy.loadtest.engine import run_closed
from deploy.loadtest.report import format_table, summarise, write_json
from deploy.loadtest.targets import HttpTarget, TritonGrpcTarget, image_request, synthetic_png

PARTS = ("limit", "eager", "triton", "gateway", "naive", "int8", "generation", "client")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = argparse.ArgumentParser(
        prog="python -m deploy.bench",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=Formatter,
    )
    p.add_argument(
        "--models",
        nargs="+",
        choices=["small", "heavy"],
        default=["small", "heavy"],
        help="small: the served 1x32x32 classifier; heavy: a 3x64x64 ResNet (compute dominates)",
    )
    p.add_argument(
        "--model-repository",
        type=Path,
        default=Path("build/model_repository/cpu"),
        help="where the small model is read from (a one-epoch stand-in is built if missing)",
    )
    p.add_argument("--model", default="classifier", help="the small model's name in that repository")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the small model's training checkpoint (default build/artifacts/<model>/model.pt; "
        "without one the PyTorch baselines use the same architecture with random weights)",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="closed-loop levels")
    p.add_argument("--duration", type=float, default=3.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of unrecorded load before each level")
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16, 32, 64],
        help="in-process sweep for the limit",
    )
    p.add_argument("--limit-seconds", type=float, default=1.0, help="seconds per in-process sweep point")
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds per level, systems interleaved; each system's best round is kept (noisy machine)",
    )
    p.add_argument(
        "--naive-threads",
        type=int,
        default=0,
        help="intra-op threads of the naive servers (spinning off); 0 = library defaults, what a "
        "user writes (all cores, onnxruntime spinning): the stronger baseline on an idle box",
    )
    p.add_argument("--skip", nargs="*", choices=PARTS, default=[], help="parts to leave out")
    p.add_argument("--gen-tokens", type=int, default=64, help="generation: new tokens per stream")
    p.add_argument(
        "--client",
        choices=["raw", "aiohttp", "httpx"],
        default="raw",
        help="HTTP client of the load engine (raw: deploy/loadtest/rawhttp.py, the least CPU per request)",
    )
    p.add_argument(
        "--triton-grpc",
        default=None,
        help="use this running Triton (host:port) instead of starting one (no 'no batching' copy then)",
    )
    p.add_argument("--triton-metrics", default=None, help="its metrics URL (with --triton-grpc)")
    p.add_argument("--gateway-url", default=None, help="use this running gateway instead of starting one")
    p.add_argument(
        "--gateway-coalesce",
        choices=["on", "off"],
        default="on",
        help="the started gateway merges concurrent requests into one Triton call "
        "(serving/gateway/coalesce.py)",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path("build/bench"), help="models, repositories, server logs"
    )
    p.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    p.add_argument("--plots", type=Path, default=Path("reports"), help="folder for bench_*.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
    return p.parse_args(argv)


class Progress:
    """One bar over all measurement steps; each step's headline printed above it."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            with contextlib.suppress(ImportError):
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="bench", unit="step", leave=False)

    def step(self, line: str, advance: bool = True) -> None:
        if self.bar is not None:
            self.bar.write(line)
            if advance:
                self.bar.update(1)
        else:
            print(line, flush=True)

    def note(self, line: str) -> None:
        self.step(line, advance=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class System:
    """One served system under test: its load target and, for Triton-backed ones, where to read counters."""

    key: str
    target: Any
    metrics_url: str | None = None
    triton_model: str | None = None
    pids: dict[str, int] = field(default_factory=dict)  # component -> pid, for server CPU per request


async def interleaved(
    systems: list[System], levels: list[int], args: argparse.Namespace, progress: Progress
) -> dict[str, list[dict[str, Any]]]:
    """Every system at every level, ``--repeats`` rounds, systems interleaved within a level.

    On a shared, noisy machine back-to-back runs of A then B see different neighbours;
    interleaving and keeping each system's best round compares them under the same conditions.
    """
    for sysm in systems:
        if not isinstance(sysm.target, inprocess.LimitRunner):
            await sysm.target.open(max(levels))
    out: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
    try:
        for c in levels:
            best: dict[str, dict[str, Any]] = {}
            rates: dict[str, list[float]] = {s.key: [] for s in systems}
            for rnd in range(args.repeats):
                order = systems if rnd % 2 == 0 else systems[::-1]
                for sysm in order:
                    if isinstance(sysm.target, inprocess.LimitRunner):
                        rate, cpu_us = await asyncio.to_thread(sysm.target.measure, args.duration)
                        row = {
                            "target": sysm.key,
                            "mode": "in-process",
                            "concurrency": c,
                            "throughput_rps": round(rate, 1),
                            "cpu_us_per_request_total": round(cpu_us, 1),
                            "failed": 0,
                            "latency_ms": None,
                            "layout": sysm.target.layout,
                            "batch_size": sysm.target.batch_size,
                        }
                        rates[sysm.key].append(row["throughput_rps"])
                        if sysm.key not in best or rate > best[sysm.key]["throughput_rps"]:
                            best[sysm.key] = row
                        continue
                    if args.warmup > 0:  # unrecorded, separately, so the CPU and counter deltas are exact
                        await run_closed(sysm.target, c, args.warmup, None, 0.0)
                    before = (
                        stack.scrape(sysm.metrics_url) if sysm.metrics_url and sysm.triton_model else None
                    )
                    cpu0 = {k: stack.tree_cpu_s(pid) for k, pid in sysm.pids.items()}
                    run = await run_closed(sysm.target, c, args.duration, None, 0.0)
                    cpu = {k: stack.tree_cpu_s(pid) for k, pid in sysm.pids.items()}
                    row = summarise(run)
                    if before is not None and sysm.metrics_url and sysm.triton_model:
                        row["triton"] = stack.triton_stats(
                            before, stack.scrape(sysm.metrics_url), sysm.triton_model
                        )
                    if cpu and row["requests"]:
                        row["server_cpu_us_per_request"] = {
                            k: round(1e6 * (v - cpu0[k]) / row["requests"], 1) for k, v in cpu.items()
                        }
                        # Client + servers: the CPU one request costs on this box, whoever else runs here.
                        row["cpu_us_per_request_total"] = round(
                            sum(row["server_cpu_us_per_request"].values())
                            + (row["client_cpu_us_per_request"] or 0.0),
                            1,
                        )
                    rates[sysm.key].append(row["throughput_rps"])
                    if sysm.key not in best or row["throughput_rps"] > best[sysm.key]["throughput_rps"]:
                        best[sysm.key] = row
            for sysm in systems:
                row = {**best[sysm.key], "throughput_rounds": rates[sysm.key]}
                out[sysm.key].append(row)
                lat = row["latency_ms"] or {}
                if row["mode"] == "in-process":
                    progress.step(
                        f"  {sysm.key:<26} c={c:<3} {row['throughput_rps']:8.1f}/s  (in-process, "
                        f"{row['layout']}, batch {row['batch_size']})  cpu "
                        f"{row['cpu_us_per_request_total']:.0f} us/img"
                    )
                    continue
                progress.step(
                    f"  {sysm.key:<26} c={c:<3} {row['throughput_rps']:8.1f}/s"
                    f"  p50 {lat.get('p50', 0):7.2f} ms"
                    f"  p99 {lat.get('p99', 0):7.2f} ms  failed {row['failed']}"
                    + (f"  batch {row['triton'].get('avg_batch_size')}" if "triton" in row else "")
                    + "".join(
                        f"  {k} {v:.0f} us/req" for k, v in row.get("server_cpu_us_per_request", {}).items()
                    )
                    + (
                        f"  client {row['client_cpu_us_per_request']:.0f} us/req"
                        if row.get("client_cpu_us_per_request")
                        else ""
                    )
                )
    finally:
        for sysm in systems:
            if not isinstance(sysm.target, inprocess.LimitRunner):
                await sysm.target.close()
    return out


def image_for(m: BenchModel) -> bytes:
    """A PNG at the model's input size, so no server spends time resizing."""
    if m.key == "small" and m.channels == 1:
        with contextlib.suppress(ImportError):
            import io

            from PIL import Image

            from training.data.digits import load_digits_splits

            digit = load_digits_splits(m.image_size).x_test[0][0]
            buf = io.BytesIO()
            Image.fromarray(digit).save(buf, format="PNG")
            return buf.getvalue()
    return synthetic_png(m.image_size, m.channels)


def _pids(triton: stack.Triton | None = None, **urls: str) -> dict[str, int]:
    """Component -> pid of the servers this bench started (none for external ones)."""
    out = {k: stack.PIDS[u] for k, u in urls.items() if u in stack.PIDS}
    if triton is not None and triton.proc is not None:
        out["triton"] = triton.proc.pid
    return out


def model_pixels(png: bytes, m: BenchModel) -> Any:
    import io

    from PIL import Image

    from serving.imaging import to_model_image

    return to_model_image(Image.open(io.BytesIO(png)), m.image_size, m.channels)[None]


@contextlib.contextmanager
def maybe_triton(args: argparse.Namespace, repo: Path, workdir: Path) -> Iterator[stack.Triton]:
    if args.triton_grpc:
        yield stack.Triton(None, args.triton_grpc, "", args.triton_metrics or "")
        return
    with stack.triton(repo, workdir) as t:
        yield t


@contextlib.contextmanager
def maybe_gateway(args: argparse.Namespace, grpc_url: str, workdir: Path) -> Iterator[str]:
    if args.gateway_url:
        yield args.gateway_url
        return
    env = {"GATEWAY_COALESCE": "true" if args.gateway_coalesce == "on" else "false"}
    with stack.gateway(grpc_url, workdir, env) as url:
        yield url


def bench_model(m: BenchModel, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from deploy.bench import int8

    workdir = args.workdir / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip)
    levels = sorted(set(args.concurrency))
    section: dict[str, Any] = {"model": m.describe(), "systems": {}}
    systems: dict[str, Any] = section["systems"]
    progress.note(
        f"[{m.key}] {m.name}: input {m.channels}x{m.image_size}x{m.image_size}, "
        f"{section['model']['parameters']} parameters, {section['model']['weights']} weights"
    )
    if "limit" not in skip:
        section["limit"] = inprocess.ort_sweep(
            m.onnx, m.input_name, m.channels, m.image_size, args.batch_sizes, args.limit_seconds
        )
        best = section["limit"]["best"]
        progress.step(
            f"  limit: {best['images_per_s']:.0f} img/s (onnxruntime, {best['layout']}, batch "
            f"{best['batch_size']})"
        )
    if "eager" not in skip:
        section["torch_eager_inprocess"] = inprocess.torch_eager(
            m.checkpoint,
            m.channels,
            m.image_size,
            [b for b in (1, 8, 32) if b in args.batch_sizes] or [1],
            args.limit_seconds,
        )
        progress.step(
            f"  PyTorch eager in-process: {section['torch_eager_inprocess']['images_per_s']:.0f} img/s "
            "(best batch)"
        )

    png = image_for(m)
    pixels = model_pixels(png, m)  # what the gateway sends Triton for this PNG: Triton direct gets the same
    with contextlib.ExitStack() as servers:
        under_test: list[System] = []
        if {"triton", "gateway"} - skip:
            repo = args.workdir / f"repo-{m.key}"
            names = bench_repository([m], repo)[m.key]
            t = servers.enter_context(maybe_triton(args, repo, workdir))
            if "triton" not in skip:
                variants = [("triton_batching", names["batching"] if not args.triton_grpc else m.name)]
                if not args.triton_grpc:
                    variants.append(("triton_no_batching", names["no_batching"]))
                else:
                    systems["triton_no_batching"] = "skipped: external Triton (no second copy to load)"
                for key, served in variants:
                    target = TritonGrpcTarget(
                        t.grpc_url, served, {m.input_name: pixels}, [m.output_name], name=key
                    )
                    under_test.append(System(key, target, t.metrics_url or None, served, _pids(triton=t)))
            if "gateway" not in skip:
                gw = servers.enter_context(maybe_gateway(args, t.grpc_url, workdir))
                spec = image_request("classify", png, m.name if not args.triton_grpc else None)
                under_test.append(
                    System(
                        "gateway",
                        HttpTarget(gw, spec, args.client, name="gateway"),
                        t.metrics_url or None,
                        m.name,
                        _pids(triton=t, gateway=gw),
                    )
                )
        if "naive" not in skip:
            spec = image_request("classify", png)
            threads = {"BENCH_THREADS": str(args.naive_threads)} if args.naive_threads else {}
            for key, app, env in (
                ("naive_fastapi_onnxruntime", "deploy.bench.naive_ort:app", {"BENCH_ONNX": str(m.onnx)}),
                (
                    "naive_fastapi_torch",
                    "deploy.bench.naive_torch:app",
                    {"BENCH_CHECKPOINT": str(m.checkpoint)},
                ),
            ):
                url = servers.enter_context(stack.uvicorn_app(app, workdir, {**env, **threads}))
                under_test.append(
                    System(key, HttpTarget(url, spec, args.client, name=key), pids=_pids(server=url))
                )
        if under_test and "limit" in section:
            best = section["limit"]["best"]  # re-measured between the served runs, so ratios share the noise
            under_test.insert(
                0,
                System(
                    "limit",
                    inprocess.LimitRunner(
                        m.onnx, m.input_name, m.channels, m.image_size, best["layout"], best["batch_size"]
                    ),
                ),
            )
        if under_test:
            progress.note(
                f"  {len(under_test)} systems up; interleaved, best of {args.repeats} round(s) per level"
            )
            measured = asyncio.run(interleaved(under_test, levels, args, progress))
            if "limit" in measured:
                section["limit"]["interleaved"] = measured.pop("limit")
                section["limit"]["images_per_s"] = max(
                    [
                        section["limit"]["images_per_s"],
                        *(r["throughput_rps"] for r in section["limit"]["interleaved"]),
                    ]
                )
            systems.update(measured)
        if m.key == "small" and "client" not in skip and "gateway" not in skip:
            gateway_spec = next(s.target.spec for s in under_test if s.key == "gateway")
            gateway_url = next(s.target.base_url for s in under_test if s.key == "gateway")
            section["client_overhead"] = asyncio.run(
                client_overhead(gateway_url, gateway_spec, args, progress)
            )
    if "int8" not in skip:
        bs = (section.get("limit") or {}).get("best", {}).get("batch_size", 16)
        section["int8"] = int8.compare(
            m.onnx,
            m.input_name,
            m.channels,
            m.image_size,
            bs,
            args.limit_seconds,
            workdir,
            digits=m.key == "small",
        )  # accuracy from the ONNX graphs
        v = section["int8"]["variants"]
        parts = [
            f"{k} {e['images_per_s']:.0f} img/s"
            + (f" acc {e['test_accuracy']:.4f}" if "test_accuracy" in e else "")
            for k, e in v.items()
            if "images_per_s" in e
        ]
        progress.step(f"  int8 (1 thread, batch {bs}): {', '.join(parts)}")
    section["ratios"] = ratios(section)
    section["ratios_cpu"] = cpu_ratios(section)
    section["targets"] = targets(section, max(levels))
    return section


async def client_overhead(
    url: str, spec: Any, args: argparse.Namespace, progress: Progress
) -> dict[str, Any]:
    """Client CPU per request of each HTTP client on the same gateway route (c=8, short)."""
    out: dict[str, Any] = {}
    for client in ("raw", "aiohttp", "httpx"):
        target = HttpTarget(url, spec, client, name=f"client:{client}")
        await target.open(8)
        try:
            row = summarise(await run_closed(target, 8, min(args.duration, 2.0), None, min(args.warmup, 0.5)))
        finally:
            await target.close()
        out[client] = {
            "client_cpu_us_per_request": row["client_cpu_us_per_request"],
            "throughput_rps": row["throughput_rps"],
            "failed": row["failed"],
        }
    r, a, h = (out[k]["client_cpu_us_per_request"] for k in ("raw", "aiohttp", "httpx"))
    if a and h:
        out["httpx_over_aiohttp_cpu"] = round(h / a, 2)
    if r and a:
        out["aiohttp_over_raw_cpu"] = round(a / r, 2)
    progress.step(f"  client CPU per request at c=8: raw {r} us, aiohttp {a} us, httpx {h} us")
    return out


def _at(rows: Any, c: int, key: str = "throughput_rps") -> float | None:
    if not isinstance(rows, list):
        return None
    for r in rows:
        if r["concurrency"] == c and r.get(key) is not None:
            return float(r[key])
    return None


def cpu_ratios(section: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per concurrency: limit CPU per image / system CPU per request (client + servers), i.e. the share of
    the limit's throughput each system reaches once every core is busy with it alone.

    On a shared machine the scheduler hands a many-process system more of the cores than the
    two-thread in-process limit, so raw throughput ratios can exceed 1; CPU per request cannot.
    """
    limit = section.get("limit") or {}
    systems = section["systems"]
    levels = sorted({r["concurrency"] for rows in systems.values() if isinstance(rows, list) for r in rows})
    out = {}
    for c in levels:
        base = _at(limit.get("interleaved"), c, "cpu_us_per_request_total") or limit.get("cpu_us_per_image")
        row = {}
        for name, rows in systems.items():
            cost = _at(rows, c, "cpu_us_per_request_total")
            if base and cost:
                row[f"{name}/limit"] = round(base / cost, 3)
        gw = _at(systems.get("gateway"), c, "cpu_us_per_request_total")
        for other in ("naive_fastapi_onnxruntime", "naive_fastapi_torch"):
            cost = _at(systems.get(other), c, "cpu_us_per_request_total")
            if gw and cost:
                row[f"gateway/{other}"] = round(cost / gw, 3)
        nb = _at(systems.get("triton_no_batching"), c, "cpu_us_per_request_total")
        b = _at(systems.get("triton_batching"), c, "cpu_us_per_request_total")
        if nb and b:
            row["triton_batching/triton_no_batching"] = round(nb / b, 3)
        out[f"c={c}"] = row
    return out


def ratios(section: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per concurrency: every system / the limit, and the pairwise ratios the targets speak about."""
    limit = (section.get("limit") or {}).get("images_per_s")
    systems = section["systems"]
    levels = sorted({r["concurrency"] for rows in systems.values() if isinstance(rows, list) for r in rows})

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out = {}
    for c in levels:
        # The limit measured between this level's served runs when there is one, else the sweep's best.
        level_limit = _at((section.get("limit") or {}).get("interleaved"), c) or limit
        row: dict[str, float | None] = {
            f"{name}/limit": div(_at(rows, c), level_limit) for name, rows in systems.items()
        }
        gw = _at(systems.get("gateway"), c)
        row["gateway/naive_fastapi_onnxruntime"] = div(gw, _at(systems.get("naive_fastapi_onnxruntime"), c))
        row["gateway/naive_fastapi_torch"] = div(gw, _at(systems.get("naive_fastapi_torch"), c))
        row["triton_batching/triton_no_batching"] = div(
            _at(systems.get("triton_batching"), c), _at(systems.get("triton_no_batching"), c)
        )
        out[f"c={c}"] = {k: v for k, v in row.items() if v is not None}
    return out


def targets(section: dict[str, Any], c: int) -> list[dict[str, Any]]:
    """The issue's targets at concurrency ``c``. ``value`` (what decides ``met``) is the throughput ratio
    measured in this run, interleaved, best round each: the targets speak of speed on these 2 cores.
    ``cpu_ratio`` beside it is the CPU-normalised view (client + server CPU per request), the one to
    trust when the machine was busy (see ``machine.load_average_*``)."""
    r = section["ratios"].get(f"c={c}", {})
    rc = section.get("ratios_cpu", {}).get(f"c={c}", {})
    checks = [
        ("Triton direct >= 0.9x the limit", "triton_batching/limit", 0.9),
        ("gateway end to end >= 0.8x the limit", "gateway/limit", 0.8),
        ("gateway >= naive FastAPI+onnxruntime", "gateway/naive_fastapi_onnxruntime", 1.0),
        ("gateway >= 3x naive FastAPI+PyTorch", "gateway/naive_fastapi_torch", 3.0),
    ]
    out = []
    for name, key, th in checks:
        v = r.get(key)
        out.append(
            {
                "target": name,
                "at_concurrency": c,
                "value": v,
                "cpu_ratio": rc.get(key),
                "threshold": th,
                "basis": "throughput",
                "met": None if v is None else v >= th,
            }
        )
    per_level = {k: v.get("triton_batching/triton_no_batching") for k, v in section["ratios"].items()}
    known = [v for v in per_level.values() if v is not None]
    out.append(
        {
            "target": "dynamic batching never slower than no batching (any concurrency, 5% noise band)",
            "value": per_level,
            "basis": "throughput",
            "cpu_ratio": {
                k: v.get("triton_batching/triton_no_batching")
                for k, v in section.get("ratios_cpu", {}).items()
            },
            "threshold": 0.95,
            "met": None if not known else min(known) >= 0.95,
        }
    )
    return out


def summary_table(report: dict[str, Any]) -> str:
    lines = []
    for key, section in report["models"].items():
        limit = (section.get("limit") or {}).get("images_per_s")
        lines.append(
            f"\n== {key}: {section['model']['name']} {section['model']['input']} (limit {limit:.0f} img/s)"
            if limit
            else f"\n== {key}"
        )
        rows = []
        for name, sys_rows in section["systems"].items():
            if isinstance(sys_rows, list):
                rows.extend({**r, "target": name} for r in sys_rows)
            else:
                lines.append(f"  {name}: {sys_rows}")
        if rows:
            lines.append(format_table(rows))
        for level, rs in section.get("ratios", {}).items():
            lines.append(f"  throughput ratios {level}: " + ", ".join(f"{k} {v:.2f}" for k, v in rs.items()))
        for level, rs in section.get("ratios_cpu", {}).items():
            lines.append(f"  CPU-normalised    {level}: " + ", ".join(f"{k} {v:.2f}" for k, v in rs.items()))
        for t in section.get("targets", []):
            mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
            value = (
                t["value"]
                if isinstance(t["value"], dict)
                else (f"{t['value']:.2f}" if t["value"] is not None else "-")
            )
            extra = f" (CPU-normalised {t['cpu_ratio']:.2f})" if isinstance(t.get("cpu_ratio"), float) else ""
            lines.append(f"  [{mark}] {t['target']}: {value} [{t['basis']}]{extra}")
    return "\n".join(lines)


def bench_generation(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Streams through the gateway to the repository's text models vs a naive eager loop; skipped without
    them."""
    from deploy.bench import generation, int8

    workdir = args.workdir / "run"
    served = generation.text_models(args.model_repository) if args.model_repository.is_dir() else []
    with contextlib.ExitStack() as servers:
        url = args.gateway_url
        if served and not url:
            t = servers.enter_context(maybe_triton(args, args.model_repository, workdir))
            url = servers.enter_context(maybe_gateway(args, t.grpc_url, workdir))
        out = asyncio.run(
            generation.run(
                args.model_repository,
                url,
                args.duration,
                args.warmup,
                new_tokens=args.gen_tokens,
                tick=progress.note,
            )
        )
    if "int8" not in args.skip:
        out["int8"] = int8.text_models(args.model_repository, args.workdir / "run")
        for name, row in out["int8"].items():
            if isinstance(row, dict) and "fp32" in row:
                progress.note(
                    f"  int8 {name}: perplexity {row['fp32']['val_perplexity']} -> "
                    f"{row['int8']['val_perplexity']}"
                    f" ({100 * row['perplexity_change']:+.1f}%), decode x{row['speedup_at_1']} at 1 row,"
                    f" x{row['speedup_at_16']} at 16"
                )
    return out


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers, which stop every server we started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "run").mkdir(exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    models: list[BenchModel] = []
    if "small" in args.models:
        models.append(small_model(args.model_repository, args.model, args.checkpoint, args.workdir))
    if "heavy" in args.models:
        models.append(heavy_model(args.workdir))
    n_levels = len(set(args.concurrency))
    per_model = (
        ("limit" not in args.skip)
        + ("eager" not in args.skip)
        + ("int8" not in args.skip)
        + n_levels
        * (
            2 * ("triton" not in args.skip)
            + ("gateway" not in args.skip)
            + ("limit" not in args.skip)
            + 2 * ("naive" not in args.skip)
        )
    )
    progress = Progress(per_model * len(models) + ("client" not in args.skip), not args.no_progress)
    report: dict[str, Any] = {
        "tool": "deploy.bench",
        "started_at": started,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "note": "client and servers share these cores; the machine is shared with other work, "
            "so figures are noisy: compare ratios within one run",
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {},
    }
    try:
        for m in models:
            report["models"][m.key] = bench_model(m, args, progress)
        if "generation" not in args.skip:
            report["generation"] = bench_generation(args, progress)
    finally:
        progress.close()
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(args.out, report)
    plots = write_plots(report, args.plots)
    print(summary_table(report))
    print(f"\nreport: {args.out}  plots: {', '.join(str(p) for p in plots)}")
    failed = sum(
        r["failed"]
        for s in report["models"].values()
        for rows in s["systems"].values()
        if isinstance(rows, list)
        for r in rows
    )
    return 1 if failed else 0


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    from deploy.bench import plots

    out = []
    for key, section in report["models"].items():
        title = f"{key}: {section['model']['name']} {'x'.join(map(str, section['model']['input']))}"
        for p in (
            plots.throughput(section, folder / f"bench_{key}_throughput.png", f"throughput, {title}"),
            plots.batch_sweep(section, folder / f"bench_{key}_batch_sweep.png", f"in-process, {title}"),
            plots.latency(section, folder / f"bench_{key}_latency.png", f"latency, {title}"),
        ):
            if p:
                out.append(p)
    return out


if __name__ == "__main__":
    sys.exit(main())
