"""Streaming text generation straight to Triton over gRPC: tokens/s and time to first token.

    python -m deploy.loadtest.textgen_triton --repository build/model_repository/cpu --models gpt lstm
    python -m deploy.loadtest.textgen_triton --url 127.0.0.1:8001 --models gpt --concurrency 1 4 16

Closed loop: ``c`` workers, each with its own gRPC stream, send one generation request at a time
and the next when the final response arrived. Reported per level: total generated tokens/s,
requests/s, time to first token (first streamed response - send) and inter-token gap
percentiles. ``--repository`` starts a tritonserver on free loopback ports for the run (and stops
it); ``--url`` measures a running one. ``--direct`` also times the ONNX step graph alone in
onnxruntime (the ceiling: no Triton, no gRPC, no Python streaming). The client runs on the same
cores as the server; keep that in mind when reading the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import queue
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def triton_for(repository: Path) -> Iterator[str]:
    from serving.triton import launcher

    cfg = launcher.TritonConfig(repository, _free_port(), _free_port(), _free_port())
    log = Path(tempfile.mkdtemp(prefix="textgen-bench-")) / "triton.log"
    with launcher.running(cfg, log):
        yield f"{cfg.host}:{cfg.grpc_port}"


def request_inputs(prompt: str, max_new: int, temperature: float, seed: int) -> list[Any]:
    import tritonclient.grpc as grpcclient

    values = [
        ("PROMPT", np.array([prompt.encode()], dtype=np.object_), "BYTES"),
        ("MAX_NEW_TOKENS", np.array([max_new], np.int32), "INT32"),
        ("TEMPERATURE", np.array([temperature], np.float32), "FP32"),
        ("TOP_K", np.array([0], np.int32), "INT32"),
        ("TOP_P", np.array([1.0], np.float32), "FP32"),
        ("SEED", np.array([seed], np.int64), "INT64"),
        ("STOP", np.zeros(0, dtype=np.object_), "BYTES"),
    ]
    out = []
    for name, arr, dtype in values:
        inp = grpcclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


class Worker(threading.Thread):
    """One gRPC stream, one request at a time until ``stop_at``."""

    def __init__(
        self, url: str, model: str, args: argparse.Namespace, wid: int, stop_at: float, warm_until: float
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.args, self.wid = url, model, args, wid
        self.stop_at, self.warm_until = stop_at, warm_until
        self.records: list[dict[str, Any]] = []
        self.error: str | None = None

    def run(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        q: queue.Queue[tuple[float, Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: q.put((time.perf_counter(), result, error)))
        params = {"chunk_tokens": self.args.chunk_tokens} if self.args.chunk_tokens > 1 else None
        n = 0
        try:
            while time.perf_counter() < self.stop_at:
                sent = time.perf_counter()
                client.async_stream_infer(
                    self.model,
                    request_inputs(
                        self.args.prompt,
                        self.args.max_new_tokens,
                        self.args.temperature,
                        self.wid * 100_000 + n,
                    ),
                    request_id=f"{self.wid}-{n}",
                    parameters=params,
                )
                stamps, tokens = [], 0
                while True:
                    at, result, error = q.get(timeout=self.args.timeout)
                    if error is not None:
                        raise error
                    stamps.append(at)
                    tokens += len(result.as_numpy("TOKEN_IDS"))
                    if result.as_numpy("FINISH_REASON")[0]:
                        break
                if sent >= self.warm_until:
                    self.records.append(
                        {
                            "sent": sent,
                            "done": stamps[-1],
                            "ttft": stamps[0] - sent,
                            "tokens": tokens,
                            "gaps": np.diff(stamps).tolist(),
                        }
                    )
                n += 1
        except Exception as exc:  # report, do not hang the benchmark
            self.error = repr(exc)
        finally:
            client.stop_stream()
            client.close()


def run_level(url: str, model: str, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    cpu0 = time.process_time()
    start = time.perf_counter()
    warm_until = start + args.warmup
    stop_at = warm_until + args.duration
    workers = [Worker(url, model, args, i, stop_at, warm_until) for i in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(args.duration + args.warmup + args.timeout + 5)
    client_cpu = (time.process_time() - cpu0) / (time.perf_counter() - start)
    records = [r for w in workers for r in w.records]
    errors = [w.error for w in workers if w.error]
    if not records:
        return {"model": model, "concurrency": concurrency, "errors": errors, "requests": 0}
    t0 = min(r["sent"] for r in records)
    t1 = max(r["done"] for r in records)
    tokens = sum(r["tokens"] for r in records)
    ttft = np.array([r["ttft"] for r in records]) * 1e3
    gaps = np.array([g for r in records for g in r["gaps"]] or [0.0]) * 1e3
    return {
        "model": model,
        "concurrency": concurrency,
        "requests": len(records),
        "tokens": tokens,
        "seconds": t1 - t0,
        "tokens_per_s": tokens / (t1 - t0),
        "requests_per_s": len(records) / (t1 - t0),
        "ttft_ms": {
            "p50": float(np.percentile(ttft, 50)),
            "p90": float(np.percentile(ttft, 90)),
            "max": float(ttft.max()),
        },
        "inter_token_ms": {
            "p50": float(np.percentile(gaps, 50)),
            "p90": float(np.percentile(gaps, 90)),
            "p99": float(np.percentile(gaps, 99)),
        },
        "responses_per_request": sum(len(r["gaps"]) + 1 for r in records) / len(records),
        "client_cpu_cores": client_cpu,  # this process's CPU use: it shares the machine with the server
        "errors": errors,
    }


def direct_onnx(
    repository: Path, model: str, batches: list[int], width: int, repeats: int = 200
) -> dict[str, Any]:
    """Step-graph latency in onnxruntime alone (1 thread): decode at each batch size, and prompt prefill."""
    import onnxruntime as ort

    vdir = max((p for p in (repository / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    cfg = (repository / model / "config.pbtxt").read_text()
    context = int(cfg.split('key: "context_length"')[1].split('string_value: "')[1].split('"')[0])
    width = min(width, context - 1)  # a step at position `width` must exist
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(
        str(vdir / "decoder.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    is_gpt = "past_k_0" in shapes
    out: dict[str, Any] = {"model": model, "step_ms": {}, "tokens_per_s": {}}

    def feeds(n: int, t: int, past: int) -> dict[str, np.ndarray]:
        f = {"tokens": np.zeros((n, t), np.int64)}
        if is_gpt:  # the server's layout: a full context_length buffer per layer, `past` positions valid
            f["past_lengths"] = np.full(n, past, np.int64)
            cols = context if t == 1 else 0
            for name, shape in shapes.items():
                if name.startswith("past_") and name != "past_lengths":
                    f[name] = np.zeros((n, shape[1], cols, shape[3]), np.float32)
        else:
            layers, _, hidden = shapes["h"]
            f["h"] = f["c"] = np.zeros((layers, n, hidden), np.float32)
        return f

    def timed(f: dict[str, np.ndarray], reps: int) -> float:
        sess.run(None, f)
        t = time.perf_counter()
        for _ in range(reps):
            sess.run(None, f)
        return (time.perf_counter() - t) / reps

    for n in batches:
        dt = timed(feeds(n, 1, width), repeats)
        out["step_ms"][n] = dt * 1e3
        out["tokens_per_s"][n] = n / dt
    prompt = 64
    out["prefill_64_one_call_ms"] = timed(feeds(1, prompt, 0), 20) * 1e3
    out["prefill_64_as_steps_ms"] = sum(timed(feeds(1, 1, p), 5) for p in range(prompt)) * 1e3
    out["cache_width"] = width if is_gpt else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.loadtest.textgen_triton",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="gRPC host:port of a running Triton")
    src.add_argument("--repository", type=Path, help="model repository (cpu target) to serve for the run")
    p.add_argument("--models", nargs="+", default=["gpt", "lstm"])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--prompt", default="KING.\nWhat news from France, my lord?\n")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--chunk-tokens", type=int, default=1, help="tokens per streamed response")
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument(
        "--direct", action="store_true", help="also time the ONNX step graph alone (needs --repository)"
    )
    p.add_argument("--out", type=Path, default=Path("reports/textgen_triton.json"))
    args = p.parse_args(argv)

    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "levels": [],
        "direct": [],
    }
    with triton_for(args.repository) if args.repository else contextlib.nullcontext(args.url) as url:
        for model in args.models:
            for c in args.concurrency:
                level = run_level(url, model, c, args)
                report["levels"].append(level)
                if level.get("requests"):
                    print(
                        f"{model:5s} c={c:3d}  {level['tokens_per_s']:8.0f} tok/s  "
                        f"ttft p50 {level['ttft_ms']['p50']:6.1f} ms p90 {level['ttft_ms']['p90']:6.1f} ms  "
                        f"gap p50 {level['inter_token_ms']['p50']:5.2f} ms  tok/resp "
                        f"{level['tokens'] / level['requests'] / level['responses_per_request']:4.1f}  "
                        f"client cpu {level['client_cpu_cores']:.2f}  errors {len(level['errors'])}"
                    )
                else:
                    print(f"{model} c={c}: no completed requests; errors {level['errors']}")
    for model in args.models:
        ones = [lv for lv in report["levels"] if lv["model"] == model and lv.get("requests")]
        base = next((lv["tokens_per_s"] for lv in ones if lv["concurrency"] == 1), None)
        for lv in ones:
            lv["speedup_vs_1"] = lv["tokens_per_s"] / base if base else None
    if args.direct and args.repository:
        for model in args.models:
            d = direct_onnx(args.repository, model, args.concurrency, width=64 + args.max_new_tokens // 2)
            report["direct"].append(d)
            print(
                f"{model:5s} onnxruntime alone: "
                + ", ".join(f"N={n}: {v:.0f} tok/s" for n, v in d["tokens_per_s"].items())
                + f"; prefill 64 chars {d['prefill_64_one_call_ms']:.2f} ms in one call vs "
                f"{d['prefill_64_as_steps_ms']:.2f} ms as 64 steps"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
