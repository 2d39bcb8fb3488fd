"""Issue 18: the memory benchmark's pure parts - the arena copy, target checks, report schema, plot."""

from __future__ import annotations

import copy
import json

from deploy.bench import memory

CONFIG = """name: "sr_psnr_x2"
backend: "python"
max_batch_size: 8
input { name: "image" data_type: TYPE_UINT8 dims: [3, -1, -1] }
output { name: "upscaled" data_type: TYPE_UINT8 dims: [3, -1, -1] }
instance_group { kind: KIND_CPU count: 2 }
parameters { key: "bytes_per_pixel" value { string_value: "4108" } }
"""


def _part(peak_mb: float, n: int, statuses: dict[str, int] | None = None, ok: bool = True) -> dict:
    return {
        "requests": n,
        "statuses": statuses or {"200": n},
        "ok": ok,
        "seconds_max": 1.0,
        "errors": [],
        "peak": {"total_mb": peak_mb, "parts_at_peak_mb": {}, "models_peak_mb": {}},
        "idle_after_mb": 1000.0,
    }


def _run(idle: float = 1000.0, end: float = 1100.0, x4_single: float = 2400.0, rps: float = 10.0) -> dict:
    def wl(single: float, conc: float) -> dict:
        return {
            "describe": "d",
            "single": _part(single, 1),
            "concurrent": _part(conc, 4),
            "processes_alive": True,
        }

    return {
        "idle_startup": {"total_mb": idle},
        "idle_end": {"total_mb": end},
        "processes_alive": True,
        "throughput": {"super-resolve": {"throughput_rps": rps}, "segment": {"throughput_rps": 2 * rps}},
        "workloads": {
            "sr_x2": wl(idle + 900, idle + 2500),
            "sr_x4": wl(x4_single, idle + 2900),
            "generate_gpt": wl(idle + 10, idle + 300),
        },
    }


def _by_name(targets: list[dict]) -> dict[str, dict]:
    return {t["target"].split(":")[0]: t for t in targets}


def test_with_arena_sets_the_parameter_and_keeps_the_rest():
    text = memory.with_arena(CONFIG)
    assert 'key: "cpu_mem_arena"' in text and 'string_value: "1"' in text
    assert 'string_value: "4108"' in text and "max_batch_size: 8" in text


def test_stub_model_from_its_command_line():
    cmd = ["/x/triton_python_backend_stub", "/tmp/arena-1/cpu/sr_psnr_x4/1/model.py", "shm", "1048576"]
    assert memory.stub_model(cmd) == "sr_psnr_x4"
    assert memory.stub_model(["python"]) == "?"


def test_targets_pass_and_fail_per_bound():
    after, before = _run(), _run(rps=10.5)
    t = _by_name(memory.check_targets(after, baseline=before))
    assert t["idle after start-up <= 1.5 GB"]["met"] is True
    assert t["idle after every workload <= 1.2x start-up"]["met"] is True  # 1100 <= 1200
    assert t["sr_x2 single"]["met"] is True and t["sr_x2 single"]["value"] == 900.0
    assert t["sr_x4 single"]["met"] is True  # 1400 over idle <= 1500
    assert t["sr_x4 concurrent"]["met"] is True  # 2900 <= 3000
    assert t["super-resolve load throughput >= 0.9x the arena run"]["value"] == round(10 / 10.5, 3)
    assert t["super-resolve load throughput >= 0.9x the arena run"]["met"] is True

    worse = _run(idle=1600.0, end=2000.0, x4_single=3200.0, rps=8.0)
    t = _by_name(memory.check_targets(worse, baseline=before))
    assert t["idle after start-up <= 1.5 GB"]["met"] is False
    assert t["idle after every workload <= 1.2x start-up"]["met"] is False  # 2000 > 1920
    assert t["sr_x4 single"]["met"] is False  # 1600 over idle
    assert t["super-resolve load throughput >= 0.9x the arena run"]["met"] is False


def test_refusals_count_as_answered_only_with_retry_after():
    ok = memory.answered([memory.Answer(200, 1.0, False), memory.Answer(429, 0.1, True)])
    assert ok["ok"] and ok["statuses"] == {"200": 1, "429": 1}
    assert not memory.answered([memory.Answer(503, 0.1, False)])["ok"]
    assert not memory.answered([memory.Answer(0, 0.1, False, "ConnectError: refused")])["ok"]
    run = _run()
    run["workloads"]["sr_x2"]["concurrent"]["ok"] = False
    assert _by_name(memory.check_targets(run))["sr_x2 concurrent"]["met"] is False


def test_quick_run_does_not_decide_size_bound_targets_and_a_dead_process_fails():
    run = _run()
    t = _by_name(memory.check_targets(run, quick=True))
    assert t["sr_x2 single"]["met"] is None and t["idle after start-up <= 1.5 GB"]["met"] is True
    run["workloads"]["sr_x4"]["processes_alive"] = False
    assert (
        _by_name(memory.check_targets(run))["no process killed (out of memory or otherwise)"]["met"] is False
    )


def test_report_schema_table_and_plot(tmp_path):
    runs = {"before": _run(idle=1100.0, end=3000.0, x4_single=3500.0, rps=10.0), "after": _run()}
    report = memory.build_report(runs, {"interval_ms": 50}, {"cpus": 2}, quick=False)
    json.dumps(report)  # plain JSON
    assert report["units"]["*_mb"].startswith("megabytes")
    assert report["targets_from_issue"]["single_peak_over_idle_mb"] == {"sr_x2": 1000.0, "sr_x4": 1500.0}
    assert report["all_targets_met"] is True
    assert not all(t["met"] for t in report["targets"]["before"] if t["met"] is not None)
    rows = {r["workload"]: r for r in report["table"]}
    assert (
        rows["sr_x4"]["before_single_peak_mb"] == 3500.0 and rows["sr_x4"]["after_single_peak_mb"] == 2400.0
    )
    assert rows["super-resolve load (requests/s)"]["after_over_before"] == 1.0
    assert memory.summary_lines(report)
    path = memory.plot(copy.deepcopy(report), tmp_path / "memory.png")
    assert path.stat().st_size > 1000


def test_throughput_target_is_decided_on_cpu_per_request_when_measured():
    after, before = _run(rps=5.0), _run(rps=10.0)  # a neighbour's load halved the requests/s
    after["throughput"]["segment"]["server_cpu_ms_per_request"] = 10.5
    before["throughput"]["segment"]["server_cpu_ms_per_request"] = 10.0
    t = _by_name(memory.check_targets(after, baseline=before))[
        "segment load throughput >= 0.9x the arena run"
    ]
    assert t["basis"] == "server CPU per request" and t["value"] == round(10 / 10.5, 3) and t["met"] is True
    assert t["rps_ratio"] == 0.5
