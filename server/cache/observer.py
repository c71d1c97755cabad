"""What the cache reports, for metrics: the outcome of a lookup and the observer protocol."""

from __future__ import annotations

import threading
from collections import Counter
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    """How a request was answered; the value is the metrics ``tier`` label of a hit."""

    MEMORY_HIT = "memory"
    DISK_HIT = "disk"
    #: waited for an identical request in flight in this process, and shared its model run
    SHARED_HIT = "shared"
    MISS = "miss"

    @property
    def hit(self) -> bool:
        return self is not Outcome.MISS

    @property
    def parameter(self) -> str:
        """The value of the response parameter ``cache``: ``hit`` or ``miss``."""
        return "hit" if self.hit else "miss"


class CacheObserver(Protocol):
    """Receives the cache's events; called on the request's thread (or the disk writer's, for disk
    evictions), so an implementation must be thread-safe and quick."""

    def on_hit(self, model: str, tier: str, lookup_seconds: float) -> None:
        """A hit in ``tier`` (memory, disk or shared); ``lookup_seconds`` includes a shared wait."""

    def on_miss(self, model: str, lookup_seconds: float) -> None:
        """A miss: the model runs; ``lookup_seconds`` is the time spent finding nothing."""

    def on_evict(self, tier: str, count: int) -> None:
        """``count`` entries left ``tier`` to stay within its size bound (disk: expired ones too)."""


class CacheStats:
    """A thread-safe counting observer: the default, and what tests and the benchmark read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits: Counter[tuple[str, str]] = Counter()
        self.misses: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.lookup_seconds = 0.0
        self.lookups = 0

    def on_hit(self, model: str, tier: str, lookup_seconds: float) -> None:
        with self._lock:
            self.hits[model, tier] += 1
            self.lookup_seconds += lookup_seconds
            self.lookups += 1

    def on_miss(self, model: str, lookup_seconds: float) -> None:
        with self._lock:
            self.misses[model] += 1
            self.lookup_seconds += lookup_seconds
            self.lookups += 1

    def on_evict(self, tier: str, count: int) -> None:
        with self._lock:
            self.evictions[tier] += count
