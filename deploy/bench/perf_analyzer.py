"""Triton's own perf_analyzer against Triton direct and the gateway's two KServe doors.

What existing Triton users would measure: the same tool, the same model, once straight at Triton
(gRPC and HTTP) and once through the gateway's gRPC door and its HTTP door (/v2), at each
concurrency, on the small classifier and a compute-bound ResNet. For each door: infer/s, p50/p99
latency, the ratio to Triton direct over the same protocol, and the gateway's CPU per request
(process CPU time delta / the requests Triton counted). Alongside, the gateway's CPU per
``/v1/classify`` request under the same closed loop as the main bench. -> reports/perf_analyzer.json
(+ a bar plot).

The binary: tritonclient 2.51's wheel ships it (later wheels do not; the venv's tritonclient is
newer), so it is taken out of that wheel with ``pip download`` into build/perf_analyzer/ once. It
needs Debian's libb64-0d (.ci/install-system-deps.sh) and libcudart.so.12, which the
nvidia-cuda-runtime-cu12 wheel (bench/test extras) ships; it runs on CPU-only machines.

examples:
  python -m deploy.bench.perf_analyzer                       # small + heavy, c = 1 16
  python -m deploy.bench.perf_analyzer --models small --concurrency 16 --interval-ms 1000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from serving import harness

ROOT = harness.ROOT
WHEEL = "tritonclient==2.51.0"  # the newest tritonclient wheel that still carries perf_analyzer
MEMBER = "tritonclient-2.51.0.data/data/bin/perf_analyzer"
CACHE = ROOT / "build" / "perf_analyzer"
# Door -> (where perf_analyzer points, protocol, the Triton-direct door it is compared with)
DOORS = ("triton_grpc", "triton_http", "gateway_grpc", "gateway_http")
DIRECT = {"gateway_grpc": "triton_grpc", "gateway_http": "triton_http"}
TARGETS = {"gateway_grpc": 0.6, "gateway_http": 0.5}  # issue 17, small classifier at c=16
CLASSIFY_CPU_TARGET_US = 600.0


class Unavailable(RuntimeError):
    """perf_analyzer cannot be fetched or cannot run here (the message says why)."""


def cudart_dir() -> Path | None:
    """The folder of libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel, if installed."""
    try:
        import nvidia.cuda_runtime as cuda_runtime  # type: ignore[import-not-found]
    except ImportError:
        return None
    for base in cuda_runtime.__path__:
        lib = Path(base) / "lib"
        if (lib / "libcudart.so.12").exists():
            return lib
    return None


def environment() -> dict[str, str]:
    """The process environment with LD_LIBRARY_PATH reaching libcudart.so.12."""
    env = dict(os.environ)
    lib = cudart_dir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p)
    return env


def ensure_binary(cache: Path = CACHE) -> Path:
    """build/perf_analyzer/perf_analyzer, fetched from the tritonclient 2.51 wheel if missing, and
    checked to start (raises :class:`Unavailable` with the reason otherwise)."""
    exe = cache / "perf_analyzer"
    if not exe.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
            got = subprocess.run(pip, capture_output=True, text=True, timeout=600)
            wheels = list(Path(tmp).glob("tritonclient-2.51.0-*.whl"))
            if got.returncode != 0 or not wheels:
                raise Unavailable(f"pip download {WHEEL} failed: {got.stderr.strip()[-500:]}")
            with (
                zipfile.ZipFile(wheels[0]) as zf,
                zf.open(MEMBER) as src,
                open(exe.with_suffix(".part"), "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
            exe.with_suffix(".part").chmod(0o755)
            exe.with_suffix(".part").rename(exe)
    if cudart_dir() is None:
        raise Unavailable(
            "libcudart.so.12 not found: install the nvidia-cuda-runtime-cu12 wheel (bench extra)"
        )
    probe = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, env=environment(), timeout=60
    )
    if "error while loading shared libraries" in probe.stderr:
        raise Unavailable(f"{exe} cannot start: {probe.stderr.strip()} (libb64-0d: make system-deps)")
    return exe


def run_one(
    exe: Path, model: str, url: str, protocol: str, concurrency: int, interval_ms: int, workdir: Path
) -> dict[str, Any]:
    """One perf_analyzer measurement (it repeats windows until three agree within the stability
    band, at most ``--max-trials``); its CSV row as numbers."""
    out = workdir / f"pa-{model}-{protocol}-{url.replace(':', '_')}-c{concurrency}.csv"
    cmd = [
        str(exe),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(interval_ms),
        "--stability-percentage",
        "25",  # a shared 2-core box: the default 10 % rarely settles
        "--max-trials",
        "6",
        "-f",
        str(out),
    ]
    got = subprocess.run(cmd, capture_output=True, text=True, env=environment(), timeout=600)
    if got.returncode != 0 or not out.exists():
        tail = (got.stdout + got.stderr).strip()[-800:]
        return {"error": f"perf_analyzer exited {got.returncode}: {tail}"}
    with open(out) as f:
        row = next(csv.DictReader(f))
    return {
        "infer_per_s": round(float(row["Inferences/Second"]), 1),
        "p50_ms": round(float(row["p50 latency"]) / 1000, 3),
        "p99_ms": round(float(row["p99 latency"]) / 1000, 3),
        "unstable": "Failed to obtain stable measurement" in got.stdout + got.stderr,
    }


def _requests(metrics_url: str, model: str) -> float:
    """Triton's count of successful requests of ``model`` (all versions)."""
    from deploy.bench import stack

    return sum(
        v
        for (name, of), v in stack.scrape(metrics_url).items()
        if name == "nv_inference_request_success" and of == model
    )


def measure_doors(
    exe: Path,
    st: harness.Stack,
    model: str,
    levels: list[int],
    interval_ms: int,
    workdir: Path,
    doors: tuple[str, ...] = DOORS,
) -> list[dict[str, Any]]:
    """Every door at every level on ``model``; the gateway's CPU per request for its doors."""
    from deploy.bench import stack

    urls = {
        "triton_grpc": (st.triton.grpc_url, "grpc"),
        "triton_http": (st.triton.http_url, "http"),
        "gateway_grpc": (st.grpc_url, "grpc"),
        "gateway_http": (st.url.removeprefix("http://"), "http"),
    }
    rows: list[dict[str, Any]] = []
    for c in levels:
        by_door: dict[str, dict[str, Any]] = {}
        for door in doors:
            url, protocol = urls[door]
            n0, cpu0 = _requests(st.triton.metrics_url, model), stack.tree_cpu_s(st.gateway.pid)
            row: dict[str, Any] = {"model": model, "door": door, "concurrency": c}
            row |= run_one(exe, model, url, protocol, c, interval_ms, workdir)
            n, cpu = _requests(st.triton.metrics_url, model) - n0, stack.tree_cpu_s(st.gateway.pid) - cpu0
            if door.startswith("gateway") and n > 0:
                row["gateway_cpu_us_per_request"] = round(1e6 * cpu / n, 1)
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            by_door[door] = row
            rows.append(row)
            print(_line(row), flush=True)
        for door, direct in DIRECT.items():
            if door in by_door and direct in by_door:
                a, b = by_door[door].get("infer_per_s"), by_door[direct].get("infer_per_s")
                if a is not None and b:
                    by_door[door]["ratio_to_direct"] = round(a / b, 3)
    return rows


def _line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"  {row['model']:<12} {row['door']:<13} c={row['concurrency']:<3} ERROR {row['error'][:200]}"
    cpu = row.get("gateway_cpu_us_per_request")
    return (
        f"  {row['model']:<12} {row['door']:<13} c={row['concurrency']:<3} {row['infer_per_s']:8.1f}/s"
        f"  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
        + (f"  gateway {cpu:.0f} us/req" if cpu is not None else "")
    )


def classify_cpu(
    st: harness.Stack, model: str, channels: int, size: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """The gateway's CPU per ``/v1/classify`` request at ``concurrency`` (a PNG upload per request)."""
    from deploy.bench import stack
    from deploy.loadtest.engine import run_closed
    from deploy.loadtest.report import summarise
    from deploy.loadtest.targets import HttpTarget, image_request, synthetic_png

    spec = image_request("classify", synthetic_png(size, channels), model)
    target = HttpTarget(st.url, spec, "raw", name="gateway")  # the main bench's client

    async def go() -> dict[str, Any]:
        await target.open(concurrency)
        try:
            await run_closed(target, concurrency, 1.0, None, 0.0)  # warm-up, unrecorded
            cpu0 = stack.tree_cpu_s(st.gateway.pid)
            run = await run_closed(target, concurrency, seconds, None, 0.0)
            cpu = stack.tree_cpu_s(st.gateway.pid) - cpu0
        finally:
            await target.close()
        row = summarise(run)
        return {
            "concurrency": concurrency,
            "requests": row["requests"],
            "failed": row["failed"],
            "throughput_rps": row["throughput_rps"],
            "gateway_cpu_us_per_request": round(1e6 * cpu / max(1, row["requests"]), 1),
            "target_us": CLASSIFY_CPU_TARGET_US,
            "load_average_1m": round(os.getloadavg()[0], 2),
        }

    return asyncio.run(go())


def verdicts(rows: list[dict[str, Any]], model: str, c: int) -> list[dict[str, Any]]:
    out = []
    for door, want in TARGETS.items():
        got = next(
            (
                r.get("ratio_to_direct")
                for r in rows
                if r["model"] == model and r["door"] == door and r["concurrency"] == c
            ),
            None,
        )
        out.append(
            {
                "what": f"{door} / direct at c={c} ({model})",
                "target": want,
                "measured": got,
                "met": got is not None and got >= want,
            }
        )
    return out


def write_plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = sorted({(r["model"], r["concurrency"]) for r in rows if "infer_per_s" in r})
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2, 3.5))
    width = 0.8 / len(DOORS)
    for i, door in enumerate(DOORS):
        vals = [
            next(
                (
                    r["infer_per_s"]
                    for r in rows
                    if (r["model"], r["concurrency"]) == g and r["door"] == door and "infer_per_s" in r
                ),
                0,
            )
            for g in groups
        ]
        ax.bar([x + i * width for x in range(len(groups))], vals, width, label=door)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))], [f"{m}\nc={c}" for m, c in groups])
    ax.set_ylabel("infer/s (perf_analyzer)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.bench.perf_analyzer", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--models", nargs="+", choices=["small", "heavy"], default=["small", "heavy"])
    p.add_argument("--model-repository", type=Path, default=Path("build/model_repository/cpu"))
    p.add_argument("--model", default="classifier", help="the small model's name in that repository")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--interval-ms", type=int, default=1500, help="perf_analyzer's measurement window")
    p.add_argument("--classify-seconds", type=float, default=4.0, help="/v1/classify CPU run; 0 = off")
    p.add_argument("--workdir", type=Path, default=Path("build/bench"))
    p.add_argument("--out", type=Path, default=Path("reports/perf_analyzer.json"))
    args = p.parse_args(argv)

    from deploy.bench.models import bench_repository, heavy_model, small_model
    from deploy.loadtest.report import write_json

    try:
        exe = ensure_binary()
    except Unavailable as exc:
        print(f"perf_analyzer bench skipped: {exc}", file=sys.stderr)
        return 0 if os.environ.get("CI") != "true" else 1
    workdir = args.workdir / "perf_analyzer"
    workdir.mkdir(parents=True, exist_ok=True)
    models = []
    if "small" in args.models:
        models.append(small_model(args.model_repository, args.model, None, args.workdir))
    if "heavy" in args.models:
        models.append(heavy_model(args.workdir))
    repo = workdir / "repo"
    bench_repository(models, repo)
    report: dict[str, Any] = {
        "tool": "deploy.bench.perf_analyzer",
        "binary": f"perf_analyzer from {WHEEL}",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()]},
        "note": "perf_analyzer, Triton and the gateway share these cores; ratios within one run compare",
        "rows": [],
    }
    with harness.start_stack(repo, workdir, env={"GATEWAY_LOG_LEVEL": "warning"}) as st:
        for m in models:
            report["rows"] += measure_doors(
                exe, st, m.name, sorted(set(args.concurrency)), args.interval_ms, workdir
            )
        small = next((m for m in models if m.key == "small"), None)
        if small is not None and args.classify_seconds > 0:
            report["classify_cpu"] = classify_cpu(
                st, small.name, small.channels, small.image_size, 16, args.classify_seconds
            )
            cpu = report["classify_cpu"]["gateway_cpu_us_per_request"]
            print(f"  /v1/classify c=16: gateway {cpu:.0f} us/req", flush=True)
        if small is not None and 16 in args.concurrency:
            report["targets"] = verdicts(report["rows"], small.name, 16)
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.out, report)
    plot = write_plot(report["rows"], args.out.with_suffix(".png"))
    print(f"report: {args.out}" + (f"  plot: {plot}" if plot else ""))
    return 1 if any("error" in r for r in report["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
