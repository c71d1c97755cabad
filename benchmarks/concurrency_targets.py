"""The targets of issue 3, checked against the JSON reports of ``tensorgate bench``.

Run the scenarios first (on a quiet machine, see docs/benchmarks.md), then::

    python benchmarks/concurrency_targets.py                  # reads benchmarks/results/*.json
    python benchmarks/concurrency_targets.py --results DIR

Prints one Markdown row per target (measured, threshold, verdict) to paste into docs/benchmarks.md;
exits 0 when every target that could be checked holds, 1 otherwise. A report that is missing makes
its targets "not run", not a failure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Report = dict[str, Any]

CNN_SHARE_OF_LIMIT = 0.90
SHARE_OF_ECHO = 0.85
CPU_MARGIN_US = 60.0
P50_MARGIN_MS = 0.15
BATCHING_SPEEDUP = 2.0
MAX_FAILURE_FREE_CONCURRENCY = 256
OVERLOAD_ERROR = "RESOURCE_EXHAUSTED"
#: the overhead-bound model: digits, or the MLP (whichever reports exist)
OVERHEAD_BOUND = ("concurrency_digits", "concurrency_mlp")


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    threshold: str
    holds: bool | None  # None: not run

    def row(self) -> str:
        verdict = {True: "holds", False: "MISSES", None: "not run"}[self.holds]
        return f"| {self.target} | {self.measured} | {self.threshold} | {verdict} |"


def find_run(report: Report, target: str, concurrency: int) -> Report | None:
    for run in report["runs"]:
        if (run["target"], run["mode"], run["concurrency"]) == (target, "closed", concurrency):
            return run
    return None


def server_label(report: Report) -> str:
    return next(r["target"] for r in report["runs"] if r["target"] != "echo")


def per_sample_cpu_us(limit: Report, batch_size: float) -> float:
    """The limit's CPU µs per sample at ``batch_size``, interpolated on log2 of the batch size."""
    points = sorted((b["batch_size"], b["cpu_us_per_sample"]) for b in limit["batches"])
    if batch_size <= points[0][0]:
        return points[0][1]
    for (b0, c0), (b1, c1) in itertools.pairwise(points):
        if batch_size <= b1:
            t = (math.log2(batch_size) - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
            return c0 + t * (c1 - c0)
    return points[-1][1]


def not_run(target: str, why: str) -> Verdict:
    return Verdict(target, why, "", None)


def cnn_targets(report: Report | None) -> Iterator[Verdict]:
    for concurrency in (16, 64):
        name = f"cnn, concurrency {concurrency}: throughput / in-process limit"
        run = report and find_run(report, server_label(report), concurrency)
        if not report or not run or not report["limit"]:
            yield not_run(name, "concurrency_cnn.json lacks it")
            continue
        best = report["limit"]["best"]
        share = run["throughput_rps"] / best["samples_per_s"]
        yield Verdict(
            name,
            f"{run['throughput_rps']:.0f} / {best['samples_per_s']:.0f} req/s "
            f"(batch {best['batch_size']}) = {share:.1%}",
            f">= {CNN_SHARE_OF_LIMIT:.0%}",
            share >= CNN_SHARE_OF_LIMIT,
        )


def overhead_targets(name: str, report: Report) -> Iterator[Verdict]:
    label = server_label(report)
    run, echo = find_run(report, label, 64), find_run(report, "echo", 64)
    if run and echo:
        share = run["throughput_rps"] / echo["throughput_rps"]
        yield Verdict(
            f"{name}, concurrency 64: throughput / echo",
            f"{run['throughput_rps']:.0f} / {echo['throughput_rps']:.0f} req/s = {share:.1%}",
            f">= {SHARE_OF_ECHO:.0%}",
            share >= SHARE_OF_ECHO,
        )
        cpu, floor, batch = (
            run["server_cpu_us_per_request"],
            echo["server_cpu_us_per_request"],
            run["mean_batch_size"],
        )
        if cpu is not None and floor is not None and batch and report["limit"]:
            compute = per_sample_cpu_us(report["limit"], batch)
            allowed = floor + compute + CPU_MARGIN_US
            yield Verdict(
                f"{name}, concurrency 64: server CPU per request",
                f"{cpu:.0f} µs (batch {batch:.1f} formed)",
                f"<= echo {floor:.0f} + compute {compute:.0f} + {CPU_MARGIN_US:.0f} = {allowed:.0f} µs",
                cpu <= allowed,
            )
    yield from p50_target(name, report)


def p50_target(name: str, report: Report) -> Iterator[Verdict]:
    run, echo = find_run(report, server_label(report), 1), find_run(report, "echo", 1)
    limit = report["limit"]
    one = limit and next((b for b in limit["batches"] if b["batch_size"] == 1), None)
    if run and echo and one:
        p50, floor, model = run["latency_ms"]["p50"], echo["latency_ms"]["p50"], one["run_ms_p50"]
        allowed = floor + model + P50_MARGIN_MS
        yield Verdict(
            f"{name}, concurrency 1: p50",
            f"{p50:.3f} ms",
            f"<= echo {floor:.3f} + model {model:.3f} + {P50_MARGIN_MS} = {allowed:.3f} ms",
            p50 <= allowed,
        )


def batching_target(report: Report | None) -> Iterator[Verdict]:
    name = "batching on / off, concurrency 64"
    labels = report and list(dict.fromkeys(r["target"] for r in report["runs"]))
    if not report or not labels or len(labels) < 2:
        yield not_run(name, "batching_on_off.json lacks it")
        return
    on, off = find_run(report, labels[0], 64), find_run(report, labels[1], 64)
    if not on or not off:
        yield not_run(name, "no concurrency-64 runs")
        return
    speedup = on["throughput_rps"] / off["throughput_rps"]
    yield Verdict(
        f"{name} ({report['model']})",
        f"{on['throughput_rps']:.0f} / {off['throughput_rps']:.0f} req/s = {speedup:.2f}x",
        f">= {BATCHING_SPEEDUP:.0f}x",
        speedup >= BATCHING_SPEEDUP,
    )


def failure_targets(reports: dict[str, Report]) -> Iterator[Verdict]:
    failed = [
        f"{name} {r['target']} c={r['concurrency']}: {r['errors']}"
        for name, report in reports.items()
        for r in report["runs"]
        if r["mode"] == "closed"
        and r["concurrency"] <= MAX_FAILURE_FREE_CONCURRENCY
        and r["error_count"]
    ]
    checked = sum(
        1
        for report in reports.values()
        for r in report["runs"]
        if r["mode"] == "closed" and r["concurrency"] <= MAX_FAILURE_FREE_CONCURRENCY
    )
    if checked:
        yield Verdict(
            f"no failure up to concurrency {MAX_FAILURE_FREE_CONCURRENCY}",
            "; ".join(failed) or f"0 errors in {checked} runs",
            "0 errors",
            not failed,
        )
    overload = reports.get("overload_digits")
    if overload is None:
        yield not_run(f"above the limits, only {OVERLOAD_ERROR}", "overload_digits.json missing")
        return
    codes = {code for r in overload["runs"] for code in r["errors"]}
    yield Verdict(
        f"above the limits, only {OVERLOAD_ERROR}",
        ", ".join(f"c={r['concurrency']}: {r['errors'] or 'none'}" for r in overload["runs"]),
        f"errors only {OVERLOAD_ERROR}",
        codes <= {OVERLOAD_ERROR},
    )


def evaluate(reports: dict[str, Report]) -> list[Verdict]:
    verdicts = list(cnn_targets(reports.get("concurrency_cnn")))
    overhead = [name for name in OVERHEAD_BOUND if name in reports]
    for name in overhead:
        verdicts += overhead_targets(reports[name]["model"], reports[name])
    if not overhead:
        verdicts.append(not_run("overhead-bound model targets", "concurrency_digits.json missing"))
    if "concurrency_cnn" in reports:
        verdicts += p50_target("cnn", reports["concurrency_cnn"])
    verdicts += batching_target(reports.get("batching_on_off"))
    verdicts += failure_targets(reports)
    return verdicts


def load_reports(results: Path) -> dict[str, Report]:
    """The ``tensorgate bench`` reports in ``results``; other scripts' JSON there (the soak, the
    request-path targets) is left alone."""
    reports = {path.stem: json.loads(path.read_text()) for path in sorted(results.glob("*.json"))}
    return {name: report for name, report in reports.items() if "runs" in report}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    reports = load_reports(args.results)
    verdicts = evaluate(reports)
    print("| target | measured | threshold | verdict |")
    print("|---|---|---|---|")
    for verdict in verdicts:
        print(verdict.row())
    loads = sorted({tuple(r["host"]["load_average"]) for r in reports.values()})
    print(f"\nhost load average (1, 5, 15 min) when each run began: {loads}")
    return 1 if any(v.holds is False for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
