"""The ceiling: the model run in-process by ONNX Runtime, with the server's session options.

At each batch size the session runs back to back on random inputs for a fixed time; throughput is
samples per second. No gRPC, no batcher, no copies: what a server could reach at best.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tensorgate.server.inputs import batch_size_for, random_feed
from tensorgate.server.repository import ModelLocation
from tensorgate.server.sessions import create_session
from tensorgate.server.settings import Settings
from tensorgate.server.spinning import session_config_for
from tensorgate.server.tensors import session_specs

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
WARMUP_RUNS = 3
#: distinct random feeds per batch size, used in turn
FEEDS = 4


@dataclass(frozen=True)
class BatchMeasurement:
    """One batch size: runs back to back for ``seconds``, and the CPU they took (all threads)."""

    batch_size: int
    runs: int
    seconds: float
    samples_per_s: float
    run_ms_p50: float
    run_ms_mean: float
    cpu_us_per_sample: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_batch(
    session: Any, feeds: Sequence[dict[str, np.ndarray]], batch_size: int, seconds: float
) -> BatchMeasurement:
    """Runs ``session`` on ``feeds`` in turn for ``seconds`` (at least three runs)."""
    for index in range(WARMUP_RUNS):
        session.run(None, feeds[index % len(feeds)])
    durations: list[float] = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    end = started + seconds
    while (now := time.perf_counter()) < end or len(durations) < WARMUP_RUNS:
        session.run(None, feeds[len(durations) % len(feeds)])
        durations.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    samples = batch_size * len(durations)
    return BatchMeasurement(
        batch_size=batch_size,
        runs=len(durations),
        seconds=elapsed,
        samples_per_s=samples / elapsed,
        run_ms_p50=float(np.median(durations)) * 1e3,
        run_ms_mean=float(np.mean(durations)) * 1e3,
        cpu_us_per_sample=cpu / samples * 1e6,
    )


def measure_limit(
    location: ModelLocation,
    settings: Settings,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seconds: float = 2.0,
    on_batch: Callable[[BatchMeasurement], None] = lambda measurement: None,
) -> list[BatchMeasurement]:
    """Throughput of the model at each batch size (a model with a fixed batch: only that one)."""
    session = create_session(
        location.path,
        location.name,
        session_config_for(location, settings),  # spinning decided as the worker decides it
        settings.worker_intra_op_threads,
        settings.inter_op_threads,
    )
    inputs, _ = session_specs(session)
    sizes = list(dict.fromkeys(batch_size_for(inputs, b) for b in batch_sizes))
    rng = np.random.default_rng()
    results = []
    for size in sizes:
        feeds = [random_feed(inputs, size, rng) for _ in range(FEEDS)]
        measurement = measure_batch(session, feeds, size, seconds)
        on_batch(measurement)
        results.append(measurement)
    return results
