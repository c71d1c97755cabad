"""benchmarks/concurrency_targets.py reads the bench reports and says which issue 3 target holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.scripts import load_script

targets = load_script("concurrency_targets")


def run(target: str, c: int, rps: float, p50: float = 1.0, cpu: float = 100.0, **extra: Any):
    return {
        "target": target,
        "mode": "closed",
        "concurrency": c,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50},
        "server_cpu_us_per_request": cpu,
        "mean_batch_size": extra.get("batch"),
        "errors": extra.get("errors", {}),
        "error_count": sum(extra.get("errors", {}).values()),
    }


def limit(*batches: tuple[int, float, float, float]) -> dict[str, Any]:
    rows = [
        {"batch_size": b, "samples_per_s": s, "run_ms_p50": ms, "cpu_us_per_sample": cpu}
        for b, s, ms, cpu in batches
    ]
    return {"batches": rows, "best": max(rows, key=lambda r: r["samples_per_s"])}


def report(model: str, runs: list[dict], lim: dict | None = None) -> dict[str, Any]:
    return {"model": model, "runs": runs, "limit": lim, "host": {"load_average": [0, 0, 0]}}


def test_cpu_per_sample_is_interpolated_between_measured_batch_sizes() -> None:
    lim = limit((1, 10, 0.1, 100.0), (4, 40, 0.1, 40.0))
    assert targets.per_sample_cpu_us(lim, 1) == 100.0
    assert targets.per_sample_cpu_us(lim, 2) == pytest.approx(70.0)  # halfway on log2
    assert targets.per_sample_cpu_us(lim, 16) == 40.0


def test_verdicts_of_complete_reports() -> None:
    reports = {
        "concurrency_cnn": report(
            "cnn",
            [run("server", 1, 400, p50=2.5), run("server", 16, 480), run("server", 64, 420)],
            limit((1, 450, 2.0, 4000.0), (8, 500, 16.0, 3800.0)),
        ),
        "concurrency_digits": report(
            "digits",
            [
                run("server", 1, 1000, p50=0.62),
                run("server", 64, 1800, cpu=290.0, batch=8.0),
                run("echo", 1, 2000, p50=0.5),
                run("echo", 64, 2000, cpu=200.0),
            ],
            limit((1, 1e5, 0.01, 10.0), (8, 8e5, 0.01, 2.0)),
        ),
        "batching_on_off": report(
            "digits", [run("batching-on", 64, 1800), run("batching-off", 64, 1000)]
        ),
        "overload_digits": report(
            "digits", [run("server", 2048, 1000, errors={"RESOURCE_EXHAUSTED": 5})]
        ),
    }
    verdicts = {v.target: v.holds for v in targets.evaluate(reports)}
    assert verdicts == {
        "cnn, concurrency 16: throughput / in-process limit": True,  # 480 / 500
        "cnn, concurrency 64: throughput / in-process limit": False,  # 420 / 500
        "digits, concurrency 64: throughput / echo": True,  # 0.9
        "digits, concurrency 64: server CPU per request": False,  # 290 > 200 + 2 + 60
        "digits, concurrency 1: p50": True,  # 0.62 <= 0.5 + 0.01 + 0.15
        "batching on / off, concurrency 64 (digits)": False,  # 1.8x
        "no failure up to concurrency 256": True,
        "above the limits, only RESOURCE_EXHAUSTED": True,
    }  # and no p50 verdict for cnn: its report has no echo run at concurrency 1


def test_missing_reports_are_not_run_rather_than_failed() -> None:
    verdicts = targets.evaluate({})
    assert verdicts and all(v.holds is None for v in verdicts)


def test_other_scripts_results_beside_the_bench_reports_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "batching_on_off.json").write_text(json.dumps(report("digits", [])))
    (tmp_path / "soak.json").write_text(json.dumps({"benchmark": "soak", "calls": 10}))
    (tmp_path / "request_path_targets.json").write_text(json.dumps({"verdicts": [], "reports": {}}))
    assert list(targets.load_reports(tmp_path)) == ["batching_on_off"]
    assert targets.evaluate(targets.load_reports(tmp_path))  # no KeyError on the others
