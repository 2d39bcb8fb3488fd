"""Load-test the gateway: closed loop at fixed concurrency levels and/or open loop at target rates.

Every run is bounded by --duration and --max-requests and stops by itself. Only loopback
targets are meant: this tool is for your own servers on this machine.

examples:
  python -m deploy.loadtest --url http://127.0.0.1:8080 --routes classify --concurrency 1 8 32
  python -m deploy.loadtest --url http://127.0.0.1:8080 --routes classify --rate 100 300 --arrivals poisson
  python -m deploy.loadtest --url http://127.0.0.1:8080 --routes all --concurrency 4 --duration 3
  python -m deploy.loadtest --routes generate --concurrency 1 4 16 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deploy.loadtest.engine import RunResult, run_closed, run_open
from deploy.loadtest.report import format_table, plot_latency, summarise, write_json
from deploy.loadtest.targets import CLIENTS, ROUTES, HttpTarget, build_request


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m deploy.loadtest",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[-1],
        formatter_class=_Formatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL (loopback)")
    p.add_argument(
        "--routes",
        nargs="+",
        default=["classify"],
        metavar="ROUTE",
        help=f"task routes to load: {', '.join(ROUTES)}, or 'all' (routes not served are skipped)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="*",
        default=None,
        help="closed-loop levels (default 1 8 32 unless --rate is given)",
    )
    p.add_argument("--rate", type=float, nargs="*", default=[], help="open-loop target rates, requests/s")
    p.add_argument(
        "--arrivals", choices=["poisson", "uniform"], default="poisson", help="open-loop arrival process"
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds of unrecorded load before each level")
    p.add_argument("--max-requests", type=int, default=50_000, help="hard cap on requests per level")
    p.add_argument(
        "--max-in-flight", type=int, default=256, help="open loop: connection pool / outstanding cap"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="HTTP client: raw (least CPU; streams and https use aiohttp), aiohttp or httpx",
    )
    p.add_argument("--model", default=None, help="served model name (default: the route's first model)")
    p.add_argument("--image", type=Path, default=None, help="image file to upload (default: a synthetic PNG)")
    p.add_argument("--prompt", default="ROMEO:\n", help="generate: prompt text")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generate: tokens per stream")
    p.add_argument("--seed", type=int, default=0, help="open loop: arrival-time seed")
    p.add_argument("--out", type=Path, default=Path("reports/loadtest.json"), help="JSON report")
    p.add_argument("--plot", type=Path, default=Path("reports/loadtest.png"), help="latency plot (PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (CI logs)")
    p.add_argument("--allow-remote", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = [] if args.rate else [1, 8, 32]
    if "all" in args.routes:
        args.routes = list(ROUTES)
    unknown = [r for r in args.routes if r not in ROUTES]
    if unknown:
        p.error(f"unknown route(s) {unknown}; choose from {', '.join(ROUTES)} or 'all'")
    host = urlparse(args.url).hostname or ""
    if not args.allow_remote and not (host in ("localhost", "::1") or host.startswith("127.")):
        p.error(f"--url must be a loopback address (127.0.0.1, localhost, ::1), not {host!r}")
    return args


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Progress:
    """A time-based tqdm bar per level (requests so far as postfix); silent without tqdm or with
    --no-progress."""

    def __init__(self, desc: str, seconds: float, enabled: bool) -> None:
        self.bar: Any = None
        self.start = time.perf_counter()
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(
                total=round(seconds, 1),
                desc=desc,
                unit="s",
                leave=False,
                bar_format="{desc}: {bar} {n:.1f}/{total:.1f}s {postfix}",
            )

    def __call__(self, answers: int) -> None:
        if self.bar is not None:
            self.bar.n = min(round(time.perf_counter() - self.start, 1), self.bar.total)
            self.bar.set_postfix_str(f"{answers} answers", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def probe(target: HttpTarget) -> str | None:
    """One request before loading: a route or model that is not served is skipped, with the reason."""
    out = await target.call()
    if out.status in ("404", "405"):
        return f"skipped: route {target.spec.path.split('?')[0]} not served (HTTP {out.status})"
    if out.status.startswith("exc:"):
        return f"skipped: {out.status[4:]} on the first request"
    return None


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[RunResult] = []
    summaries: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    pool = max([*args.concurrency, args.max_in_flight if args.rate else 1])
    for route in args.routes:
        spec = build_request(route, args.image, args.model, args.prompt, args.max_new_tokens)
        target = HttpTarget(args.url, spec, args.client, args.timeout, name=route)
        await target.open(pool)
        try:
            reason = await probe(target)
            if reason:
                skipped[route] = reason
                print(f"{route}: {reason}", file=sys.stderr)
                continue
            for c in args.concurrency:
                bar = _Progress(f"{route} closed c={c}", args.warmup + args.duration, not args.no_progress)
                try:
                    run = await run_closed(target, c, args.duration, args.max_requests, args.warmup, tick=bar)
                finally:
                    bar.close()
                runs.append(run)
                summaries.append({"route": route, **summarise(run)})
            for r in args.rate:
                bar = _Progress(f"{route} open {r:g}/s", args.warmup + args.duration, not args.no_progress)
                try:
                    run = await run_open(
                        target,
                        r,
                        args.duration,
                        args.max_requests,
                        args.arrivals,
                        args.max_in_flight,
                        args.seed,
                        args.warmup,
                        tick=bar,
                    )
                finally:
                    bar.close()
                runs.append(run)
                summaries.append({"route": route, **summarise(run)})
        finally:
            await target.close()
    return {"runs": runs, "summaries": summaries, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = asyncio.run(run_all(args))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "allow_remote"}
    report = {
        "tool": "deploy.loadtest",
        "started_at": started,
        "url": args.url,
        "client": args.client,
        "config": config,
        "results": result["summaries"],
        "skipped": result["skipped"],
    }
    write_json(args.out, report)
    plot = plot_latency(result["runs"], args.plot, f"gateway latency ({args.url})")
    if result["summaries"]:
        print(format_table(result["summaries"]))
    print(f"report: {args.out}" + (f"  plot: {plot}" if plot else ""))
    failed = sum(s["failed"] for s in result["summaries"])
    return 1 if failed or not result["summaries"] else 0


if __name__ == "__main__":
    sys.exit(main())
