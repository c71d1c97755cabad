"""Per-model statistics, as ModelStatistics reports them (Triton's fields)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tensorgate.server.batching import BatchEvent


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class ModelStats:
    """Counters of one loaded model; updated from handler and batcher threads under one lock."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    batch_sizes: dict[int, Duration] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_batch(self, event: BatchEvent) -> None:
        with self._lock:
            self.execution_count += 1
            self.inference_count += event.batch_size
            self.compute.add(event.compute_seconds)
            for waited in event.queue_seconds:
                self.queue.add(waited)
            self.batch_sizes.setdefault(event.batch_size, Duration()).add(event.compute_seconds)

    def on_reject(self, reason: str) -> None:
        """Rejections are counted as failed requests by :meth:`on_request`."""

    def on_request(self, ok: bool, seconds: float) -> None:
        with self._lock:
            (self.success if ok else self.fail).add(seconds)
            self.last_inference_ms = int(time.time() * 1000)

    def on_cache(self, hit: bool, seconds: float) -> None:
        with self._lock:
            (self.cache_hit if hit else self.cache_miss).add(seconds)
