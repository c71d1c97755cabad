"""Figures of one run (throughput, percentiles, CPU per request) and the ratios between runs.

A run record is a plain dict, as written to the JSON. Ratios read every server result against the
yardsticks: the in-process limit (best batch size), the echo floor at the same concurrency or rate,
the thin servers at the same load (throughput against the faster one; CPU and p50 against the one
on the same gRPC core where the run's core is known, else the faster one), and the first server
configuration of the scenario (e.g. batching on against off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tensorgate.tools.bench.load import LoadResult, LoadSpec

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}
ECHO = "echo"
#: the thin server's label on each gRPC core
THIN = {"threads": "thin-threads", "aio": "thin-aio"}
YARDSTICKS = (ECHO, *THIN.values())

Run = dict[str, Any]


def latency_ms(latencies: np.ndarray) -> dict[str, float | None]:
    if latencies.size == 0:
        return {name: None for name in (*PERCENTILES, "mean", "max")}
    values = np.percentile(latencies, list(PERCENTILES.values())) * 1e3
    figures: dict[str, float | None] = {
        name: float(v) for name, v in zip(PERCENTILES, values, strict=True)
    }
    figures["mean"] = float(latencies.mean() * 1e3)
    figures["max"] = float(latencies.max() * 1e3)
    return figures


def run_record(
    label: str,
    spec: LoadSpec,
    result: LoadResult,
    server_cpu_s: float | None,
    mean_batch_size: float | None,
) -> Run:
    """The JSON record of one run; CPU figures in µs per request completed in the window."""
    requests = int(result.latencies.size)
    per_request = 1e6 / requests if requests else None
    record: Run = {
        "target": label,
        "mode": spec.mode,
        "concurrency": spec.concurrency if spec.mode == "closed" else None,
        "rate": spec.rate if spec.mode == "open" else None,
        "duration_s": spec.duration_s,
        "requests": requests,
        "throughput_rps": requests / spec.duration_s,
        "latency_ms": latency_ms(result.latencies),
        "errors": dict(sorted(result.errors.items())),
        "error_count": sum(result.errors.values()),
        "server_cpu_us_per_request": (
            server_cpu_s * per_request if server_cpu_s is not None and per_request else None
        ),
        "generator_cpu_us_per_request": result.cpu_s * per_request if per_request else None,
        "mean_batch_size": mean_batch_size,
    }
    if spec.mode == "open":
        lag = result.send_lag
        record["send_lag_p99_ms"] = float(np.percentile(lag, 99) * 1e3) if lag.size else None
    return record


def _key(run: Run) -> tuple[str, float | None]:
    return run["mode"], run["concurrency"] if run["mode"] == "closed" else run["rate"]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def thin_reference(run: Run, thins: Sequence[Run]) -> tuple[Run | None, Run | None]:
    """(the faster thin run, the thin run to compare CPU and latency with) among ``thins`` at the
    run's load: the one on the run's gRPC core when it is known and measured, else the faster."""
    if not thins:
        return None, None
    faster = max(thins, key=lambda r: r["throughput_rps"])
    same_core = next(
        (t for t in thins if t["target"] == THIN.get(run.get("grpc_core") or "")), None
    )
    return faster, same_core or faster


def add_ratios(runs: Sequence[Run], limit_samples_per_s: float | None) -> None:
    """Sets ``ratios`` on every run that is not the echo server's; ``thin_reference`` names the
    thin run its CPU and latency were compared with."""
    echo = {_key(r): r for r in runs if r["target"] == ECHO}
    thins: dict[tuple[str, float | None], list[Run]] = {}
    for r in runs:
        if r["target"] in THIN.values():
            thins.setdefault(_key(r), []).append(r)
    labels = [r["target"] for r in runs if r["target"] not in YARDSTICKS]
    first = {_key(r): r for r in runs if labels and r["target"] == labels[0]}
    for run in runs:
        if run["target"] == ECHO:
            continue
        floor = echo.get(_key(run))
        baseline = first.get(_key(run))
        faster_thin, thin = thin_reference(run, thins.get(_key(run), []))
        ratios: dict[str, float | None] = {
            "throughput_vs_limit": _ratio(run["throughput_rps"], limit_samples_per_s),
            "throughput_vs_echo": _ratio(run["throughput_rps"], floor and floor["throughput_rps"]),
            "p50_minus_echo_ms": _difference(
                run["latency_ms"]["p50"], floor and floor["latency_ms"]["p50"]
            ),
            "server_cpu_minus_echo_us": _difference(
                run["server_cpu_us_per_request"], floor and floor["server_cpu_us_per_request"]
            ),
            "throughput_vs_thin": _ratio(
                run["throughput_rps"], faster_thin and faster_thin["throughput_rps"]
            ),
            "server_cpu_minus_thin_us": _difference(
                run["server_cpu_us_per_request"], thin and thin["server_cpu_us_per_request"]
            ),
            "server_cpu_vs_thin": _ratio(
                run["server_cpu_us_per_request"], thin and thin["server_cpu_us_per_request"]
            ),
            "p50_minus_thin_ms": _difference(
                run["latency_ms"]["p50"], thin and thin["latency_ms"]["p50"]
            ),
        }
        run["thin_reference"] = thin and thin["target"]
        if baseline is not None and baseline is not run:
            ratios[f"throughput_vs_{labels[0]}"] = _ratio(
                run["throughput_rps"], baseline["throughput_rps"]
            )
        run["ratios"] = ratios
