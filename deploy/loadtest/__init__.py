"""Load testing for the gateway's task routes (and Triton directly): closed and open loop.

    python -m deploy.loadtest --url http://127.0.0.1:8080 --routes classify --concurrency 1 8 32
    python -m deploy.loadtest --url http://127.0.0.1:8080 --routes classify --rate 200 --arrivals poisson

Library use (the benchmark does this): build a target from ``deploy.loadtest.targets``, drive it
with ``run_closed``/``run_open`` from ``deploy.loadtest.engine`` and turn the raw samples into
figures with ``deploy.loadtest.report.summarise``.
"""

from deploy.loadtest.engine import Outcome, RunResult, arrival_times, run_closed, run_open
from deploy.loadtest.report import format_table, plot_latency, summarise, write_json
from deploy.loadtest.targets import (
    ROUTES,
    HttpTarget,
    RequestSpec,
    SSECounter,
    TritonGrpcTarget,
    build_request,
)

__all__ = [
    "ROUTES",
    "HttpTarget",
    "Outcome",
    "RequestSpec",
    "RunResult",
    "SSECounter",
    "TritonGrpcTarget",
    "arrival_times",
    "build_request",
    "format_table",
    "plot_latency",
    "run_closed",
    "run_open",
    "summarise",
    "write_json",
]
