"""Speed measurement: bounded bursts, interleaved rounds, rows per second."""

from __future__ import annotations

import time

import numpy as np

from tensorgate.tools.optimize.measure import MIN_RUNS, measure_speed, timed_runs

FEED_1 = {"x": np.zeros((1, 4), np.float32)}
FEED_32 = {"x": np.zeros((32, 4), np.float32)}


def test_a_burst_makes_at_least_the_minimum_runs() -> None:
    calls = []

    durations = timed_runs(calls.append, FEED_1, seconds=0.0)

    assert len(durations) == len(calls) == MIN_RUNS
    assert all(d >= 0 for d in durations)


def test_every_model_is_measured_in_every_round_at_both_batch_sizes() -> None:
    seen: list[str] = []
    batches: dict[str, set[int]] = {"fast": set(), "slow": set()}

    def runner(name: str, delay: float):
        def run(feed: dict[str, np.ndarray]) -> None:
            batches[name].add(len(feed["x"]))
            time.sleep(delay)

        return run

    speeds = measure_speed(
        {"fast": runner("fast", 0.0), "slow": runner("slow", 0.002)},
        FEED_1,
        FEED_32,
        seconds=0.03,
        rounds=2,
        on_round=seen.append,
    )

    assert seen == ["fast", "slow", "fast", "slow"]
    assert batches == {"fast": {1, 32}, "slow": {1, 32}}
    assert speeds["slow"].latency_batch == 1 and speeds["slow"].throughput_batch == 32
    # A run that sleeps 2 ms cannot exceed 32 rows / 2 ms; one that does nothing is far faster.
    assert speeds["slow"].throughput <= 32 / 0.002
    assert speeds["fast"].throughput > speeds["slow"].throughput
    assert speeds["slow"].latency_ms_p50 >= 2.0
    assert speeds["slow"].latency_ms_p90 >= speeds["slow"].latency_ms_p50
