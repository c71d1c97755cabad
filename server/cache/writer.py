"""Writes entries to the disk tier on one background thread, so that a miss answers before SQLite
commits. The memory tier already holds the entry, so this process serves hits at once; other
processes see it once the write lands (milliseconds)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from tensorgate.server.cache.disk import DiskTier

logger = logging.getLogger(__name__)

#: Writes waiting beyond this many, or beyond MAX_PENDING_BYTES of values, are dropped (the entry
#: stays in memory): never block a response, never let a slow disk grow the process.
MAX_PENDING = 256
MAX_PENDING_BYTES = 64 * 1024 * 1024


class DiskWriter:
    """A bounded queue of ``(key, value, ttl_s)`` drained by the thread ``tensorgate-cache-writer``.
    After each write it culls the disk tier and reports the evictions to ``on_evict``."""

    def __init__(
        self,
        disk: DiskTier,
        on_evict: Callable[[int], None],
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self._disk = disk
        self._on_evict = on_evict
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._pending: deque[tuple[bytes, bytes, float]] = deque()
        self._pending_bytes = 0
        self._writing = False
        self._closed = False
        self._warned_full = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="tensorgate-cache-writer", daemon=True
        )
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        """Bytes of values waiting to be written."""
        with self._condition:
            return self._pending_bytes

    def submit(self, key: bytes, value: bytes, ttl_s: float) -> bool:
        """Queues a write; False when the queue is full or closed and the write is dropped."""
        with self._condition:
            full = (
                len(self._pending) >= self._max_pending
                or self._pending_bytes + len(value) > self._max_pending_bytes
            )
            if self._closed or full:
                warn, self._warned_full = not self._warned_full, True
                accepted = False
            else:
                self._pending.append((key, value, ttl_s))
                self._pending_bytes += len(value)
                self._condition.notify_all()
                warn, accepted = False, True
        if warn:
            logger.warning(
                "disk cache writes fall behind; entries beyond %d pending (or %d bytes) are dropped",
                self._max_pending,
                self._max_pending_bytes,
            )
        return accepted

    def flush(self, timeout_s: float) -> bool:
        """Waits until every queued write has landed; False if that takes longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._pending or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def close(self, timeout_s: float) -> None:
        """Lands the queued writes (within ``timeout_s``), then stops the thread."""
        self.flush(timeout_s)
        with self._condition:
            self._closed = True
            self._pending.clear()
            self._pending_bytes = 0
            self._condition.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._writing = True
            try:
                self._disk.set_many(batch)
                evicted = self._disk.cull()
                if evicted:
                    self._on_evict(evicted)
            except Exception:  # the thread must outlive any bug, or writes would silently stop
                logger.exception("disk cache write failed")
            finally:
                with self._condition:
                    self._writing = False
                    self._condition.notify_all()
