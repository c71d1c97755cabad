"""Speed on this machine: latency at batch 1 and throughput at batch 32, for several models at once.

The models are measured in interleaved rounds (original, variant A, variant B, original, ...), so a
burst of load from another process falls on all of them rather than on one. Latency is the median
(and 90th percentile) over every batch-1 run of every round; throughput is the best round's rows
per second, the figure least disturbed by other processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from tensorgate.server.inputs import Feed, rows

Run = Callable[[Feed], object]

#: Untimed runs before any measurement: arena growth and lazy initialisation happen here.
WARM_RUNS = 3
#: Every timed burst makes at least this many runs, even past its time budget ...
MIN_RUNS = 3
#: ... and at most this many, so a tiny model cannot spin for long in a loop.
MAX_RUNS = 100_000


@dataclass(frozen=True)
class Speed:
    """Measured speed of one model: latencies in milliseconds, throughput in rows per second."""

    latency_batch: int
    latency_ms_p50: float
    latency_ms_p90: float
    throughput_batch: int
    throughput: float


def timed_runs(run: Run, feed: Feed, seconds: float) -> list[float]:
    """Runs ``run(feed)`` for about ``seconds`` (MIN_RUNS..MAX_RUNS runs); each run's duration."""
    durations: list[float] = []
    deadline = time.monotonic() + seconds
    while len(durations) < MAX_RUNS:
        started = time.perf_counter()
        run(feed)
        durations.append(time.perf_counter() - started)
        if len(durations) >= MIN_RUNS and time.monotonic() >= deadline:
            break
    return durations


def measure_speed(
    runners: Mapping[str, Run],
    latency_feed: Feed,
    throughput_feed: Feed,
    seconds: float,
    rounds: int = 3,
    on_round: Callable[[str], None] | None = None,
) -> dict[str, Speed]:
    """Measures every runner in ``rounds`` interleaved rounds, about ``seconds`` each in all.

    ``on_round(name)`` is called after each model's share of a round (for a progress bar).
    """
    burst = seconds / (2 * rounds)
    throughput_rows = rows(throughput_feed)
    for run in runners.values():
        for _ in range(WARM_RUNS):
            run(latency_feed)
            run(throughput_feed)
    latencies: dict[str, list[float]] = {name: [] for name in runners}
    best: dict[str, float] = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, run in runners.items():
            latencies[name].extend(timed_runs(run, latency_feed, burst))
            durations = timed_runs(run, throughput_feed, burst)
            best[name] = max(best[name], throughput_rows * len(durations) / sum(durations))
            if on_round is not None:
                on_round(name)
    latency_rows = rows(latency_feed)
    return {
        name: Speed(
            latency_batch=latency_rows,
            latency_ms_p50=float(np.percentile(latencies[name], 50) * 1e3),
            latency_ms_p90=float(np.percentile(latencies[name], 90) * 1e3),
            throughput_batch=throughput_rows,
            throughput=best[name],
        )
        for name in runners
    }
