"""How many series one worker exposes, counted on the real registry (tensorgate.server.metrics), and
what a fleet of them costs Prometheus: the figures of docs/scaling.md.

    python k8s/cardinality.py                        # the default fleet
    python k8s/cardinality.py --workers 800 --models 5 --statuses 8 --reasons 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prometheus_client import generate_latest

from tensorgate.server.metrics import CacheSizeCollector, Metrics, ModelStateCollector

#: Series Prometheus adds per target: up, scrape_duration_seconds, scrape_samples_scraped,
#: scrape_samples_post_metric_relabeling, scrape_series_added.
SCRAPE_SERIES = 5
#: tensorgate_gpu_utilization_ratio, _memory_used_bytes, _memory_total_bytes per GPU (NVML).
GPU_SERIES = 3
STATUSES = ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED",
            "UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN", "DATA_LOSS")  # fmt: skip
REASONS = ("queue_full", "deadline", "fault")


def worker_series(models: int, statuses: int, reasons: int) -> int:
    """Lines of one worker's /metrics once every model has seen ``statuses`` final statuses and
    ``reasons`` rejection reasons, and both cache tiers have hit and evicted."""
    metrics = Metrics()
    names = [f"model{i}" for i in range(models)]
    metrics.registry.register(
        ModelStateCollector(
            lambda: [(n, "1", "READY", "") for n in names], lambda: dict.fromkeys(names, 0)
        )
    )
    metrics.registry.register(CacheSizeCollector(lambda: 0, lambda: 0))
    for name in names:
        for status in STATUSES[:statuses]:
            metrics.request_duration.labels(name, "1", status).observe(0.001)
            metrics.requests.labels(name, "1", status).inc()
        for tier in ("memory", "disk"):
            metrics.on_hit(name, tier, 0.001)
        metrics.on_miss(name, 0.001)
        metrics.queue_duration.labels(name).observe(0.001)
        metrics.compute_duration.labels(name).observe(0.001)
        metrics.batch_size.labels(name).observe(1)
        for reason in REASONS[:reasons]:
            metrics.rejected.labels(name, reason).inc()
    for tier in ("memory", "disk"):
        metrics.on_evict(tier, 1)
    text = generate_latest(metrics.registry).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=800, help="worker pods in the fleet")
    parser.add_argument("--models", type=int, default=5, help="models per worker")
    parser.add_argument("--statuses", type=int, default=8, choices=range(1, len(STATUSES) + 1))
    parser.add_argument("--reasons", type=int, default=2, choices=range(len(REASONS) + 1))
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds")
    args = parser.parse_args(argv)
    fixed = worker_series(0, 0, 0)
    first = worker_series(1, 1, 0) - fixed
    per_status = worker_series(1, 2, 0) - worker_series(1, 1, 0)
    per_reason = worker_series(1, 1, 1) - worker_series(1, 1, 0)
    one = worker_series(args.models, args.statuses, args.reasons) + GPU_SERIES + SCRAPE_SERIES
    fleet = one * args.workers
    rows = [
        ("fixed per worker (inflight, cache bytes and evictions)", fixed),
        ("per model, first status (OK)", first),
        ("per further status of a model", per_status),
        ("per rejection reason of a model", per_reason),
        (
            f"one worker: {args.models} models x {args.statuses} statuses x {args.reasons} reasons, "
            "1 GPU, scrape series",
            one,
        ),
        (f"fleet of {args.workers} workers", fleet),
        (f"samples per second at a {args.interval:g} s interval", round(fleet / args.interval)),
    ]
    for label, value in rows:
        sys.stdout.write(f"{label:<90} {value:>10,}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
