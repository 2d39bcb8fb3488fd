"""Benchmark plots: throughput per system and concurrency against the limit; the batch-size sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput(section: dict[str, Any], path: Path, title: str) -> Path | None:
    """Grouped bars: images/s of every served system at each concurrency; the limit as a line."""
    systems = {k: v for k, v in section.get("systems", {}).items() if isinstance(v, list) and v}
    if not systems:
        return None
    plt = _plt()
    import numpy as np

    levels = sorted({r["concurrency"] for rows in systems.values() for r in rows})
    width = 0.8 / len(systems)
    cpu = section.get("ratios_cpu") or {}
    fig, (ax, ax_cpu) = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for i, name in enumerate(systems):  # right: x the limit per CPU (holds on a shared machine)
        xs = np.arange(len(levels)) + (i - (len(systems) - 1) / 2) * width
        ax_cpu.bar(xs, [cpu.get(f"c={c}", {}).get(f"{name}/limit", 0.0) for c in levels], width, label=name)
    ax_cpu.axhline(1.0, color="k", linestyle="--", linewidth=1)
    ax_cpu.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    ax_cpu.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
    ax_cpu.set_ylabel("x the limit, CPU-normalised (client + servers)")
    ax_cpu.set_title("limit CPU per image / system CPU per request")
    ax_cpu.grid(True, axis="y", alpha=0.3)
    for i, (name, rows) in enumerate(systems.items()):
        by_level = {r["concurrency"]: r["throughput_rps"] for r in rows}
        xs = np.arange(len(levels)) + (i - (len(systems) - 1) / 2) * width
        ax.bar(xs, [by_level.get(c, 0.0) for c in levels], width, label=name)
    limit = (section.get("limit") or {}).get("images_per_s")
    if limit:
        ax.axhline(
            limit, color="k", linestyle="--", linewidth=1, label=f"limit (in-process ORT) {limit:.0f}/s"
        )
        ax.axhline(0.8 * limit, color="grey", linestyle=":", linewidth=1, label="0.8x limit")
    ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
    ax.set_ylabel("images / s")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def batch_sweep(section: dict[str, Any], path: Path, title: str) -> Path | None:
    limit = section.get("limit") or {}
    if not limit.get("points"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    layouts: dict[str, list[tuple[int, float]]] = {}
    for p in limit["points"]:
        layouts.setdefault(f"onnxruntime, {p['layout']}", []).append((p["batch_size"], p["images_per_s"]))
    eager = section.get("torch_eager_inprocess") or {}
    for p in eager.get("points", []):
        layouts.setdefault(f"PyTorch eager, {p.get('threads')} thread(s)", []).append(
            (p["batch_size"], p["images_per_s"])
        )
    for name, pts in layouts.items():
        pts.sort()
        ax.plot([b for b, _ in pts], [r for _, r in pts], "-o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (in-process)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(section: dict[str, Any], path: Path, title: str) -> Path | None:
    """p50 (solid) and p99 (dashed) latency of every served system against concurrency."""
    systems = {k: v for k, v in section.get("systems", {}).items() if isinstance(v, list) and v}
    if not systems:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, rows in systems.items():
        rows = sorted((r for r in rows if r.get("latency_ms")), key=lambda r: r["concurrency"])
        cs = [r["concurrency"] for r in rows]
        line = ax.plot(cs, [r["latency_ms"]["p50"] for r in rows], "-o", label=f"{name} p50")[0]
        ax.plot(cs, [r["latency_ms"]["p99"] for r in rows], "--", color=line.get_color(), label=f"{name} p99")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrency (closed loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
