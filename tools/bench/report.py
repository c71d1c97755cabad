"""What a benchmark shows: a table on the terminal, the JSON report, and a PNG beside it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorgate.tools.bench.summary import YARDSTICKS, Run

#: the limit is drawn when it is at most this many times the fastest run's throughput
LIMIT_ON_CHART = 3.0


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _load(run: Run) -> str:
    return f"c={run['concurrency']}" if run["mode"] == "closed" else f"{run['rate']:g}/s"


def _errors(run: Run) -> str:
    if not run["error_count"]:
        return "0"
    return " ".join(f"{code}:{count}" for code, count in run["errors"].items())


def limit_table(limit: dict[str, Any]) -> Table:
    table = Table(title=f"in-process limit (max_batch_size {limit['max_batch_size']})")
    for column in ("batch", "samples/s", "run p50 ms", "CPU µs/sample"):
        table.add_column(column, justify="right")
    best = limit["best"]["batch_size"]
    for b in limit["batches"]:
        style = "bold" if b["batch_size"] == best else None
        table.add_row(
            str(b["batch_size"]),
            _num(b["samples_per_s"], 0),
            _num(b["run_ms_p50"], 3),
            _num(b["cpu_us_per_sample"], 1),
            style=style,
        )
    return table


def runs_table(name: str, runs: Sequence[Run]) -> Table:
    """One row per run; the ratio columns compare with the limit, the echo floor and the first
    server configuration at the same load."""
    extra = sorted(
        {k for r in runs for k in r.get("ratios", {}) if k.startswith("throughput_vs_")}
        - {"throughput_vs_limit", "throughput_vs_echo", "throughput_vs_thin"}
    )
    table = Table(title=f"{name}: latency in ms, CPU in µs per request")
    columns = ["target", "load", "req/s", "p50", "p90", "p99", "p99.9", "errors"]
    columns += ["srv CPU", "gen CPU", "batch", "x limit", "x echo", "p50-echo"]
    columns += ["x thin", "CPU-thin", "p50-thin"]
    columns += [f"x {k.removeprefix('throughput_vs_')}" for k in extra]
    for column in columns:
        table.add_column(column, justify="left" if column in ("target", "errors") else "right")
    for run in runs:
        latency, ratios = run["latency_ms"], run.get("ratios", {})
        table.add_row(
            run["target"],
            _load(run),
            _num(run["throughput_rps"], 0),
            _num(latency["p50"], 3),
            _num(latency["p90"], 3),
            _num(latency["p99"], 3),
            _num(latency["p99_9"], 3),
            _errors(run),
            _num(run["server_cpu_us_per_request"], 0),
            _num(run["generator_cpu_us_per_request"], 0),
            _num(run["mean_batch_size"], 1),
            _ratio(ratios.get("throughput_vs_limit")),
            _ratio(ratios.get("throughput_vs_echo")),
            _num(ratios.get("p50_minus_echo_ms"), 3),
            _ratio(ratios.get("throughput_vs_thin")),
            _num(ratios.get("server_cpu_minus_thin_us"), 0),
            _num(ratios.get("p50_minus_thin_ms"), 3),
            *(_ratio(ratios.get(k)) for k in extra),
            style="dim" if run["target"] in YARDSTICKS else None,
        )
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    if report["limit"]:
        console.print(limit_table(report["limit"]))
    if report["runs"]:
        console.print(runs_table(report["name"], report["runs"]))


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


class PlottingUnavailable(RuntimeError):
    """The benchmark's plot needs matplotlib, which only the ``bench`` extra installs."""


def draw_png(report: dict[str, Any], path: Path) -> None:
    """Latency (p50 solid, p99 dashed) against throughput, one colour per target; the limit as a
    vertical line. Raises :class:`PlottingUnavailable` without matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib
    except ImportError as error:
        raise PlottingUnavailable(
            "no PNG: matplotlib is not installed (pip install 'tensorgate[bench]')"
        ) from error

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    labels = list(dict.fromkeys(r["target"] for r in report["runs"]))
    for index, label in enumerate(labels):
        color = f"C{index}"
        for mode in ("closed", "open"):
            runs = [
                r
                for r in report["runs"]
                if r["target"] == label and r["mode"] == mode and r["latency_ms"]["p50"] is not None
            ]
            runs.sort(key=lambda r: r["concurrency"] or r["rate"])  # in order of load
            if not runs:
                continue
            x = [r["throughput_rps"] for r in runs]
            marker = "o" if mode == "closed" else "s"
            axes.plot(
                x,
                [r["latency_ms"]["p50"] for r in runs],
                marker=marker,
                color=color,
                label=f"{label} p50 ({mode} loop)",
            )
            axes.plot(
                x,
                [r["latency_ms"]["p99"] for r in runs],
                marker=marker,
                linestyle="--",
                color=color,
                alpha=0.6,
                label=f"{label} p99 ({mode} loop)",
            )
            for r, xi in zip(runs, x, strict=True):
                axes.annotate(
                    _load(r),
                    (xi, r["latency_ms"]["p50"]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7,
                    color=color,
                )
    if report["limit"]:
        best = report["limit"]["best"]
        label = f"in-process limit: {best['samples_per_s']:,.0f}/s (batch {best['batch_size']})"
        fastest = max((r["throughput_rps"] for r in report["runs"]), default=0.0)
        if best["samples_per_s"] <= LIMIT_ON_CHART * fastest:
            axes.axvline(best["samples_per_s"], color="grey", linestyle=":", label=label)
        else:  # far off to the right: named in the legend, not drawn
            axes.plot([], [], color="grey", linestyle=":", label=f"{label}, off the chart")
    axes.set_xlabel("throughput (requests/s, one sample each)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    host = report["host"]
    axes.set_title(f"{report['name']} (model {report['model']}, {host['cpus']} CPUs)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
