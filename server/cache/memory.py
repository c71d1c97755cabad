"""The in-process tier: a least-recently-used map bounded in bytes, with a per-entry TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tensorgate.server.cache.codec import Outputs


@dataclass(slots=True, frozen=True)
class _Entry:
    outputs: Outputs
    size: int
    expires_at: float | None  # time.monotonic(); None: no TTL


class MemoryLRU:
    """Entries are read-only decoded outputs; ``size`` is the encoded value's length, which bounds
    the memory the arrays hold (they are views over that value)."""

    def __init__(self, capacity_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity_bytes = capacity_bytes
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outputs | None:
        """The outputs under ``key``, marked most recently used; None when absent or expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at is not None and self._clock() >= entry.expires_at:
                self._remove(key)
                return None
            self._entries.move_to_end(key)
            return entry.outputs

    def put(self, key: bytes, outputs: Outputs, size: int, ttl_s: float = 0.0) -> int:
        """Stores an entry, evicting least recently used ones to stay in bound; returns how many were
        evicted. An entry larger than the whole bound is not stored."""
        if size > self.capacity_bytes:
            return 0
        expires_at = self._clock() + ttl_s if ttl_s > 0 else None
        evicted = 0
        with self._lock:
            if key in self._entries:
                self._remove(key)
            self._entries[key] = _Entry(outputs, size, expires_at)
            self._bytes += size
            while self._bytes > self.capacity_bytes:
                self._remove(next(iter(self._entries)))
                evicted += 1
        return evicted

    def _remove(self, key: bytes) -> None:
        self._bytes -= self._entries.pop(key).size
