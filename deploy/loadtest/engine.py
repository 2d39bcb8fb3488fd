"""The load engine: closed loop at a fixed concurrency, open loop at a target arrival rate.

A *target* is anything with ``async call() -> Outcome`` (an HTTP route, Triton over gRPC, ...);
the engine only schedules calls and timestamps them, so every target is measured the same way.

* Closed loop: ``concurrency`` workers, each sends its next request when the previous answer
  has arrived. Latency = answer time - send time. It measures capacity, but a slow server also
  slows the senders down (coordinated omission), so its latency understates what users see.
* Open loop: requests are *scheduled* at Poisson or uniform arrival times, whatever the server
  does. Latency = answer time - scheduled send time, so queueing in the client (a full
  connection pool, a late event loop) counts against the server, as it would for real users.

Both are bounded in requests and time, and stop by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Outcome:
    """One answer: ``status`` is the HTTP code ("200"), a gRPC code ("grpc:UNAVAILABLE") or "exc:<Type>"."""

    status: str
    ok: bool
    ttft_s: float | None = None  # streams: send -> first token
    tokens: int = 0  # streams: tokens received


class Target(Protocol):
    name: str

    async def open(self, pool_size: int) -> None: ...

    async def call(self) -> Outcome: ...

    async def close(self) -> None: ...


@dataclass
class RunResult:
    """Raw samples of one run; ``deploy.loadtest.report.summarise`` turns them into figures."""

    target: str
    mode: str  # closed | open
    level: float  # concurrency (closed) or requests/s (open)
    wall_s: float  # measured window: first send after warm-up -> last answer
    latency_s: np.ndarray  # per request, see the module docstring for the start point
    statuses: list[str]
    ok: np.ndarray  # bool per request
    ttft_s: np.ndarray  # NaN where not a stream
    tokens: np.ndarray
    client_cpu_s: float  # this process's CPU time during the window (is the generator the bottleneck?)
    late_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # open loop: actual - scheduled send
    stopped_by: str = "duration"  # duration | requests


class _Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[float, float, Outcome]] = []  # (start, end, outcome)

    def add(self, start: float, end: float, out: Outcome) -> None:
        self.rows.append((start, end, out))

    def result(
        self,
        target: str,
        mode: str,
        level: float,
        t0: float,
        cpu_s: float,
        late: list[float],
        stopped_by: str,
    ) -> RunResult:
        rows = self.rows
        end = max((r[1] for r in rows), default=t0)
        return RunResult(
            target=target,
            mode=mode,
            level=level,
            wall_s=max(end - t0, 1e-9),
            latency_s=np.array([r[1] - r[0] for r in rows], dtype=np.float64),
            statuses=[r[2].status for r in rows],
            ok=np.array([r[2].ok for r in rows], dtype=bool),
            ttft_s=np.array([np.nan if r[2].ttft_s is None else r[2].ttft_s for r in rows], dtype=np.float64),
            tokens=np.array([r[2].tokens for r in rows], dtype=np.int64),
            client_cpu_s=cpu_s,
            late_s=np.array(late, dtype=np.float64),
            stopped_by=stopped_by,
        )


async def _safe_call(target: Target) -> Outcome:
    try:
        return await target.call()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a transport failure is a result to count, not a crash of the run
        return Outcome(f"exc:{type(exc).__name__}", False)


Tick = Callable[[int], None]  # progress callback: number of answers so far


async def _ticker(rec: _Recorder, tick: Tick | None, done: asyncio.Event) -> None:
    # Progress is polled a few times a second instead of per request: it costs nothing per call.
    while tick is not None and not done.is_set():
        tick(len(rec.rows))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), 0.25)
    if tick is not None:
        tick(len(rec.rows))


async def run_closed(
    target: Target,
    concurrency: int,
    duration_s: float,
    max_requests: int | None = None,
    warmup_s: float = 0.5,
    tick: Tick | None = None,
) -> RunResult:
    """``concurrency`` workers back to back for ``duration_s`` (after ``warmup_s`` not recorded)."""
    loop_start = time.perf_counter()
    measure_from = loop_start + warmup_s
    stop_at = measure_from + duration_s
    rec, issued, stopped_by = _Recorder(), 0, "duration"
    limit = max_requests if max_requests is not None else math.inf
    cpu0: float | None = None

    async def worker() -> None:
        nonlocal issued, stopped_by, cpu0
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            if now >= measure_from:
                if issued >= limit:
                    stopped_by = "requests"
                    return
                if cpu0 is None:
                    cpu0 = time.process_time()
                issued += 1
            start = now
            out = await _safe_call(target)
            if start >= measure_from:  # warm-up answers are not recorded
                rec.add(start, time.perf_counter(), out)

    done = asyncio.Event()
    ticker = asyncio.create_task(_ticker(rec, tick, done))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
    done.set()
    await ticker
    return rec.result(target.name, "closed", concurrency, measure_from, cpu, [], stopped_by)


def arrival_times(rate: float, n: int, arrivals: str = "poisson", seed: int = 0) -> np.ndarray:
    """Offsets (s) of ``n`` sends at ``rate``/s: exponential gaps (Poisson) or even spacing (uniform)."""
    if rate <= 0 or n <= 0:
        return np.zeros(0)
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
        gaps[0] = 0.0
        return np.cumsum(gaps)
    if arrivals == "uniform":
        return np.arange(n, dtype=np.float64) / rate
    raise ValueError(f"arrivals must be poisson or uniform, not {arrivals!r}")


async def run_open(
    target: Target,
    rate: float,
    duration_s: float,
    max_requests: int | None = None,
    arrivals: str = "poisson",
    max_in_flight: int = 512,
    seed: int = 0,
    warmup_s: float = 0.0,
    tick: Tick | None = None,
) -> RunResult:
    """Send at scheduled times for ``duration_s``; latency counts from the *scheduled* time.

    ``max_in_flight`` bounds memory and sockets; a request waiting for a slot is late, and its
    wait is part of its latency (that is the point of measuring from the schedule).
    """
    n = int(rate * duration_s)
    stopped_by = "duration"
    if max_requests is not None and n > max_requests:
        n, stopped_by = max_requests, "requests"
    offsets = arrival_times(rate, n, arrivals, seed)
    if warmup_s > 0:  # a short closed-loop warm-up opens connections; not recorded
        await run_closed(target, min(4, max_in_flight), warmup_s, warmup_s=0.0)
    rec, late = _Recorder(), []
    slots = asyncio.Semaphore(max_in_flight)

    async def one(scheduled: float) -> None:
        async with slots:
            out = await _safe_call(target)
        rec.add(scheduled, time.perf_counter(), out)

    done = asyncio.Event()
    ticker = asyncio.create_task(_ticker(rec, tick, done))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while i < n:
        now = time.perf_counter()
        due = t0 + offsets[i]
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Fire everything that is due now (the event loop wakes ~1 ms late; sends keep their schedule).
        while i < n and t0 + offsets[i] <= now:
            scheduled = t0 + offsets[i]
            late.append(now - scheduled)
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    done.set()
    await ticker
    return rec.result(target.name, "open", rate, t0, cpu, late, stopped_by)
