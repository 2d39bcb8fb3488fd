"""Tune a model's Triton config by measurement, like Model Analyzer: batching, instances, threads.

A staged search against a real Triton (explicit model control: one candidate loaded at a time):
  1. instance count x onnxruntime intra-op threads (queue delay 0, no preferred sizes)
  2. max_queue_delay_microseconds, with the best of stage 1
  3. preferred batch sizes, with the best so far
Each candidate is measured over gRPC (closed loop, the bench's load engine) at every
--concurrency level; the score is the throughput at the highest level, p99 at the lowest
breaks near-ties (within 3%). Finally the current config and the winner are re-measured,
interleaved, so the recommendation is not an artefact of a noisy moment.

    python -m deploy.bench.tune --model-dir build/model_repository/cpu/classifier

Writes reports/tune.json and reports/tune/<model>/config.pbtxt (validated strictly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.bench import stack
from deploy.bench.models import BenchModel, copy_model, small_model
from deploy.loadtest.engine import run_closed
from deploy.loadtest.report import summarise, write_json
from deploy.loadtest.targets import TritonGrpcTarget
from export.repository import validate_config_text


@dataclass(frozen=True)
class Candidate:
    instances: int
    threads: int
    delay_us: int = 0
    preferred: tuple[int, ...] = ()

    def label(self) -> str:
        pref = ",".join(map(str, self.preferred)) or "-"
        return f"inst={self.instances} thr={self.threads} delay={self.delay_us}us pref={pref}"

    def apply(self, cfg: Any) -> None:
        """Set this candidate on a parsed ModelConfig (cpu target, Python backend + onnx_runner)."""
        if not cfg.instance_group:
            cfg.instance_group.add()
        cfg.instance_group[0].count = self.instances
        cfg.parameters["intra_op_threads"].string_value = str(self.threads)
        if cfg.max_batch_size > 0:
            cfg.dynamic_batching.max_queue_delay_microseconds = self.delay_us
            del cfg.dynamic_batching.preferred_batch_size[:]
            cfg.dynamic_batching.preferred_batch_size.extend(self.preferred)


@dataclass
class Measured:
    candidate: Candidate
    stage: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.rows[-1]["throughput_rps"] if self.rows else 0.0

    @property
    def p99_low(self) -> float:
        lat = self.rows[0].get("latency_ms") if self.rows else None
        return lat["p99"] if lat else float("inf")


def current_candidate(cfg: Any) -> Candidate:
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    count = cfg.instance_group[0].count if cfg.instance_group else 1
    db = cfg.dynamic_batching
    return Candidate(
        max(count, 1),
        int(params.get("intra_op_threads", "1")),
        int(db.max_queue_delay_microseconds),
        tuple(db.preferred_batch_size),
    )


def better(a: Measured, b: Measured) -> Measured:
    """Higher throughput at the top level; within 3%, lower p99 at the lowest level wins."""
    if a.score >= b.score * 1.03:
        return a
    if b.score >= a.score * 1.03:
        return b
    return a if a.p99_low <= b.p99_low else b


def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()


class Tuner:
    def __init__(self, model: BenchModel, args: argparse.Namespace, triton: stack.Triton, repo: Path) -> None:
        import numpy as np

        self.m, self.args, self.t, self.repo = model, args, triton, repo
        rng = np.random.default_rng(0)
        self.pixels = rng.integers(
            0, 256, (1, model.channels, model.image_size, model.image_size), dtype=np.uint8
        )
        self.seen: dict[Candidate, Measured] = {}
        self.n = 0

    async def measure(self, cand: Candidate, stage: str) -> Measured:
        if cand in self.seen:
            return self.seen[cand]
        self.n += 1
        name = f"tune_{self.n}"
        copy_model(self.m.model_dir, self.repo, name, cand.apply)
        _post(f"{self.t.http_url}/v2/repository/models/{name}/load")
        target = TritonGrpcTarget(
            self.t.grpc_url, name, {self.m.input_name: self.pixels}, [self.m.output_name]
        )
        result = Measured(cand, stage)
        await target.open(max(self.args.concurrency))
        try:
            for c in sorted(self.args.concurrency):
                before = stack.scrape(self.t.metrics_url)
                row = summarise(await run_closed(target, c, self.args.duration, None, self.args.warmup))
                row["triton"] = stack.triton_stats(before, stack.scrape(self.t.metrics_url), name)
                result.rows.append(row)
        finally:
            await target.close()
            _post(f"{self.t.http_url}/v2/repository/models/{name}/unload")
            shutil.rmtree(self.repo / name, ignore_errors=True)
        self.seen[cand] = result
        lat = result.rows[0].get("latency_ms") or {}
        print(
            f"  [{stage}] {cand.label():<44} "
            + "  ".join(f"c={r['concurrency']}: {r['throughput_rps']:.0f}/s" for r in result.rows)
            + f"  p99@c={result.rows[0]['concurrency']} {lat.get('p99', float('nan')):.1f} ms"
            + f"  batch {result.rows[-1]['triton'].get('avg_batch_size')}",
            flush=True,
        )
        return result

    async def search(self, start: Candidate) -> tuple[Measured, list[Measured]]:
        a = self.args
        best = await self.measure(start, "current")
        for inst in a.instances:
            for thr in a.threads:
                if inst * thr <= a.max_threads:
                    best = better(
                        best, await self.measure(Candidate(inst, thr, 0, ()), "instances x threads")
                    )
        b = best.candidate
        for delay in a.delays:
            best = better(
                best, await self.measure(Candidate(b.instances, b.threads, delay, ()), "queue delay")
            )
        b = best.candidate
        for pref in a.preferred:
            sizes = tuple(int(x) for x in pref.split(",") if x) if pref != "none" else ()
            best = better(
                best,
                await self.measure(
                    Candidate(b.instances, b.threads, b.delay_us, sizes), "preferred batch sizes"
                ),
            )
        return best, list(self.seen.values())

    async def confirm(self, a: Candidate, b: Candidate, rounds: int) -> dict[str, list[float]]:
        """Re-measure two candidates interleaved (A B B A ...) at the top level; throughput per round."""
        out: dict[str, list[float]] = {"current": [], "recommended": []}
        if a == b:
            return out
        saved, self.seen = self.seen, {}
        try:
            for i in range(rounds):
                for key, cand in (
                    (("current", a), ("recommended", b))
                    if i % 2 == 0
                    else (("recommended", b), ("current", a))
                ):
                    self.seen.pop(cand, None)
                    out[key].append((await self.measure(cand, f"confirm {key}")).score)
        finally:
            self.seen = saved
        return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""

    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = argparse.ArgumentParser(
        prog="python -m deploy.bench.tune",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=Formatter,
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path("build/model_repository/cpu/classifier"),
        help="model folder of a cpu repository (a one-epoch stand-in is built when missing)",
    )
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[8, 32], help="closed-loop levels per candidate"
    )
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3], help="instance counts to try")
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime intra-op threads to try"
    )
    p.add_argument("--max-threads", type=int, default=4, help="skip instance x thread products above this")
    p.add_argument(
        "--delays", type=int, nargs="+", default=[0, 100, 500, 2000], help="max_queue_delay_microseconds"
    )
    p.add_argument(
        "--preferred",
        nargs="+",
        default=["none", "4", "8", "16"],
        help="preferred batch sizes, comma-separated per candidate ('none' = unset)",
    )
    p.add_argument(
        "--confirm-rounds", type=int, default=2, help="interleaved re-measurements of current vs best"
    )
    p.add_argument("--workdir", type=Path, default=Path("build/bench"))
    p.add_argument("--out", type=Path, default=Path("reports/tune.json"))
    p.add_argument(
        "--config-out",
        type=Path,
        default=None,
        help="recommended config.pbtxt (default reports/tune/<model>/config.pbtxt)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from google.protobuf import text_format

    args = parse_args(argv)
    workdir = args.workdir / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    model = small_model(args.model_dir.parent, args.model_dir.name, None, args.workdir)
    cfg = validate_config_text((model.model_dir / "config.pbtxt").read_text(), expect_name=model.name)
    start = current_candidate(cfg)
    repo = args.workdir / "tune-repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    print(
        f"tuning {model.model_dir} (current: {start.label()}) on {', '.join(map(str, args.concurrency))} "
        f"concurrent requests, {args.duration:g}s per level",
        flush=True,
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with stack.triton(repo, workdir, model_control="explicit") as t:
        tuner = Tuner(model, args, t, repo)

        async def run() -> tuple[Measured, list[Measured], dict[str, list[float]]]:
            best, all_ = await tuner.search(start)
            return best, all_, await tuner.confirm(start, best.candidate, args.confirm_rounds)

        best, measured, confirm = asyncio.run(run())
    shutil.rmtree(repo, ignore_errors=True)
    # Keep the current config unless the winner also wins the interleaved re-measurement.
    keep_current = bool(confirm["current"]) and max(confirm["recommended"]) < max(confirm["current"])
    chosen = start if keep_current else best.candidate
    rec = validate_config_text((model.model_dir / "config.pbtxt").read_text(), expect_name=model.name)
    chosen.apply(rec)
    text = text_format.MessageToString(rec)
    validate_config_text(text, expect_name=model.name)
    config_out = args.config_out or args.out.parent / "tune" / model.name / "config.pbtxt"
    config_out.parent.mkdir(parents=True, exist_ok=True)
    config_out.write_text(text)
    report = {
        "tool": "deploy.bench.tune",
        "started_at": started,
        "model_dir": str(model.model_dir),
        "note": "shared 2-core machine, client and Triton on the same cores: compare within this run",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "current": asdict(start),
        "recommended": asdict(chosen),
        "kept_current": keep_current,
        "confirm_throughput_rps": confirm,
        "candidates": [
            {"stage": m.stage, **asdict(m.candidate), "score_rps": m.score, "results": m.rows}
            for m in measured
        ],
        "recommended_config": str(config_out),
    }
    write_json(args.out, report)
    print(
        f"\nrecommended: {chosen.label()}"
        + ("  (current config kept: the search winner lost the re-measurement)" if keep_current else "")
    )
    if confirm["current"]:
        print(
            f"confirmation at c={max(args.concurrency)}: current {confirm['current']} rps, "
            f"recommended {confirm['recommended']} rps"
        )
    print(f"report: {args.out}  config: {config_out}")
    with contextlib.suppress(Exception):
        print(json.dumps(asdict(chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
