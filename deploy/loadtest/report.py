"""Figures from raw samples: throughput, latency percentiles, TTFT, errors; a table, JSON and a plot."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.loadtest.engine import RunResult

PERCENTILES = (50, 95, 99)


def _ms_stats(values_s: np.ndarray) -> dict[str, float] | None:
    values = values_s[~np.isnan(values_s)] if values_s.size else values_s
    if values.size == 0:
        return None
    ms = values * 1e3
    out = {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES}
    out.update(mean=float(ms.mean()), max=float(ms.max()))
    return {k: round(v, 3) for k, v in out.items()}


def summarise(run: RunResult) -> dict[str, Any]:
    """One run as plain JSON-able figures. Latency percentiles are over successful requests only."""
    n = int(run.ok.size)
    ok = int(run.ok.sum())
    errors = Counter(s for s, good in zip(run.statuses, run.ok, strict=True) if not good)
    tokens = int(run.tokens[run.ok].sum()) if n else 0
    streams = bool(np.any(~np.isnan(run.ttft_s))) if n else False
    out: dict[str, Any] = {
        "target": run.target,
        "mode": run.mode,
        "concurrency" if run.mode == "closed" else "rate_rps": run.level,
        "requests": n,
        "ok": ok,
        "failed": n - ok,
        "errors": dict(sorted(errors.items())),
        "wall_s": round(run.wall_s, 3),
        "throughput_rps": round(ok / run.wall_s, 2),
        "latency_ms": _ms_stats(run.latency_s[run.ok]),
        "client_cpu_s": round(run.client_cpu_s, 3),
        "client_cpu_us_per_request": round(1e6 * run.client_cpu_s / n, 1) if n else None,
        "stopped_by": run.stopped_by,
    }
    if streams:
        good = run.ok & (run.tokens > 0)
        gen_s = run.latency_s[good] - np.nan_to_num(run.ttft_s[good])
        per_stream = (run.tokens[good] - 1) / np.maximum(gen_s, 1e-9)
        out["ttft_ms"] = _ms_stats(run.ttft_s[good])
        out["tokens"] = tokens
        out["tokens_per_s"] = round(tokens / run.wall_s, 1)  # all streams together
        out["tokens_per_s_per_stream"] = round(float(np.median(per_stream)), 1) if per_stream.size else None
    if run.mode == "open" and run.late_s.size:
        out["send_late_ms"] = {
            "p50": round(float(np.percentile(run.late_s, 50)) * 1e3, 3),
            "p99": round(float(np.percentile(run.late_s, 99)) * 1e3, 3),
            "max": round(float(run.late_s.max()) * 1e3, 3),
        }
        out["achieved_rate_rps"] = round(n / run.wall_s, 2)
    return out


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of summaries (one line per run)."""
    head = [
        "target",
        "mode",
        "level",
        "req",
        "fail",
        "rps",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ttft p50",
        "tok/s",
        "errors",
    ]
    with_cpu = any("cpu_us_per_request_total" in r for r in rows)
    if with_cpu:  # the benchmark adds client + server CPU per request
        head.insert(9, "cpu us/req")
    lines = [head]
    for r in rows:
        lat = r.get("latency_ms") or {}
        ttft = r.get("ttft_ms") or {}
        level = r.get("concurrency", r.get("rate_rps"))
        line = [
            str(r["target"]),
            r["mode"],
            f"{level:g}" if level is not None else "",
            str(r["requests"]),
            str(r["failed"]),
            f"{r['throughput_rps']:.1f}",
            *(f"{lat[k]:.2f}" if k in lat else "-" for k in ("p50", "p95", "p99")),
            f"{ttft['p50']:.1f}" if ttft else "-",
            f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-",
            ",".join(f"{k}:{v}" for k, v in r["errors"].items()) or "-",
        ]
        if with_cpu:
            cpu = r.get("cpu_us_per_request_total")
            line.insert(9, f"{cpu:.0f}" if cpu is not None else "-")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def plot_latency(runs: Sequence[RunResult], path: Path, title: str = "latency") -> Path | None:
    """Left: latency CDF per run (log x). Right: p50/p95/p99 against the load level per target."""
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cdf, ax_pct) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        lat = np.sort(run.latency_s[run.ok]) * 1e3
        if lat.size:
            unit = "c" if run.mode == "closed" else " rps"
            ax_cdf.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=f"{run.target} {run.level:g}{unit}")
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("latency (ms)")
    ax_cdf.set_ylabel("fraction of requests")
    ax_cdf.grid(True, which="both", alpha=0.3)
    ax_cdf.legend(fontsize=7)
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.target, run.mode), []).append(run)
    for (target, mode), group in groups.items():
        group = sorted(group, key=lambda r: r.level)
        levels = [r.level for r in group]
        for p, style in zip(PERCENTILES, ("-o", "--s", ":^"), strict=True):
            vals = [np.percentile(r.latency_s[r.ok], p) * 1e3 if r.ok.any() else np.nan for r in group]
            ax_pct.plot(levels, vals, style, label=f"{target} ({mode}) p{p}")
    ax_pct.set_xscale("log", base=2)
    ax_pct.set_yscale("log")
    ax_pct.set_xlabel("concurrency (closed) / requests per s (open)")
    ax_pct.set_ylabel("latency (ms)")
    ax_pct.grid(True, which="both", alpha=0.3)
    ax_pct.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
