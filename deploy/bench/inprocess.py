"""In-process baselines: onnxruntime at its best batch size (the limit) and PyTorch eager.

The limit is what this machine can compute with no serving at all: the same ONNX graph, the
same uint8 inputs, swept over batch sizes and two thread layouts (one session using every
core; one single-threaded session per core, each driven by its own Python thread -
onnxruntime releases the GIL), keeping the best images/s.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CORES = os.cpu_count() or 1


def ort_session(path: Path | str, threads: int = 1, spinning: bool = False) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def images(channels: int, size: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def _timed(fns: list[Callable[[], int]], seconds: float) -> float:
    """Run each fn in its own thread for ``seconds`` (at least once); items per second over all of them."""
    return _timed_cpu(fns, seconds)[0]


def _timed_cpu(fns: list[Callable[[], int]], seconds: float) -> tuple[float, float]:
    """(items per second, CPU microseconds per item) of running each fn in its own thread for ``seconds``.

    CPU per item is what a shared machine cannot distort much: the scheduler decides how many
    cores we get, not how much CPU an image costs.
    """
    for fn in fns:
        fn()  # warm-up (arena allocation, first-run caches), outside the clock
    counts = [0] * len(fns)
    cpu0 = time.process_time()
    start = time.perf_counter()
    stop = start + seconds

    def loop(i: int) -> None:
        fn = fns[i]
        while True:
            counts[i] += fn()
            if time.perf_counter() >= stop:
                return

    if len(fns) == 1:
        loop(0)
    else:
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(fns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    n = sum(counts)
    return n / (time.perf_counter() - start), 1e6 * (time.process_time() - cpu0) / max(n, 1)


class LimitRunner:
    """The limit's best configuration, re-measurable between served runs (same noise conditions)."""

    def __init__(
        self, onnx: Path, input_name: str, channels: int, size: int, layout: str, batch_size: int
    ) -> None:
        sessions, threads = (1, CORES) if layout.startswith("1 session") else (CORES, 1)
        x = images(channels, size, batch_size)
        runners = [ort_session(onnx, threads) for _ in range(sessions)]
        self.fns = [(lambda s=s: (s.run(None, {input_name: x}), len(x))[1]) for s in runners]
        self.layout, self.batch_size = layout, batch_size

    def measure(self, seconds: float) -> tuple[float, float]:
        """(images/s, CPU microseconds per image)."""
        return _timed_cpu(self.fns, seconds)


def ort_sweep(
    onnx: Path,
    input_name: str,
    channels: int,
    size: int,
    batch_sizes: list[int],
    seconds: float,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """images/s for every (layout, batch size); ``best`` is the limit."""
    layouts = {f"1 session x {CORES} threads": (1, CORES)}
    if CORES > 1:
        layouts[f"{CORES} sessions x 1 thread"] = (CORES, 1)
    points = []
    for layout, (sessions, threads) in layouts.items():
        runners = [ort_session(onnx, threads) for _ in range(sessions)]
        for bs in batch_sizes:
            x = images(channels, size, bs)
            fns = [(lambda s=s, x=x: (s.run(None, {input_name: x}), len(x))[1]) for s in runners]
            rate, cpu_us = _timed_cpu(fns, seconds)
            points.append(
                {
                    "layout": layout,
                    "batch_size": bs,
                    "images_per_s": round(rate, 1),
                    "cpu_us_per_image": round(cpu_us, 1),
                }
            )
            if tick:
                tick(f"ort {layout} bs={bs}: {rate:.0f} img/s")
    best = max(points, key=lambda p: p["images_per_s"])
    cheapest = min(points, key=lambda p: p["cpu_us_per_image"])
    return {
        "points": points,
        "best": best,
        "images_per_s": best["images_per_s"],
        "cheapest": cheapest,
        "cpu_us_per_image": cheapest["cpu_us_per_image"],
    }


def torch_eager(
    checkpoint: Path,
    channels: int,
    size: int,
    batch_sizes: list[int],
    seconds: float,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """PyTorch eager in-process (torch's default threads), uint8 in as the served graph takes it."""
    import torch

    from deploy.bench.naive_torch import load_uint8_model

    model = load_uint8_model(checkpoint)
    points = []
    default_threads = torch.get_num_threads()
    with torch.inference_mode():
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            for bs in batch_sizes:
                x = torch.from_numpy(images(channels, size, bs))
                rate, cpu_us = _timed_cpu([lambda x=x: (model(x), len(x))[1]], seconds)
                points.append(
                    {
                        "threads": threads,
                        "batch_size": bs,
                        "images_per_s": round(rate, 1),
                        "cpu_us_per_image": round(cpu_us, 1),
                    }
                )
                if tick:
                    tick(f"torch eager {threads} thread(s) bs={bs}: {rate:.0f} img/s")
    torch.set_num_threads(default_threads)
    best = max(points, key=lambda p: p["images_per_s"])
    return {"points": points, "best": best, "images_per_s": best["images_per_s"]}
