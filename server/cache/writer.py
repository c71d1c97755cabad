"""Writes entries to the disk tier on one background thread, so that a miss answers before SQLite
commits. The memory tier already holds the entry, so this process serves hits at once; other
processes see it once the write lands (milliseconds), or within the disk tier's FILTER_FRESH_S
under load. The same thread keeps the disk tier's key filter in sync, when a lookup asks."""

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
#: Once woken by a first write, the thread waits this long for more (unless the queue is half full
#: or someone flushes): one transaction and one wake-up for the writes of a burst.
WRITE_LINGER_S = 0.02
#: The disk tier is culled (expired entries, then least recently used ones down to its limit) at
#: most this often while writes go on, on flush, and this long after the last write: a cull costs
#: several SQLite transactions, and the tier overshoots its limit by at most this much writing.
CULL_INTERVAL_S = 1.0


class DiskWriter:
    """A bounded queue of ``(key, value, ttl_s)`` drained by the thread ``tensorgate-cache-writer``,
    which also culls the disk tier (reporting evictions to ``on_evict``) and syncs its key filter."""

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
        self._flushing = 0
        #: written since the last cull
        self._dirty = False
        self._culled_at = time.monotonic()
        self._warned_full = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="tensorgate-cache-writer", daemon=True
        )
        disk.on_stale = self._wake
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
                if len(self._pending) == 1 or len(self._pending) == self._max_pending // 2:
                    self._condition.notify_all()  # the first of a batch, or no more lingering
                warn, accepted = False, True
        if warn:
            logger.warning(
                "disk cache writes fall behind; entries beyond %d pending (or %d bytes) are dropped",
                self._max_pending,
                self._max_pending_bytes,
            )
        return accepted

    def flush(self, timeout_s: float) -> bool:
        """Waits until every queued write has landed and the tier is culled; False if that takes
        longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            self._flushing += 1
            self._condition.notify_all()
            try:
                while self._pending or self._writing or self._dirty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        return False
                    self._condition.wait(remaining)
            finally:
                self._flushing -= 1
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

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _run(self) -> None:
        self._step([], sync=True, cull=False)  # the key filter, from the rows already on disk
        while True:
            with self._condition:
                while not self._has_work():
                    # a cull is due this long after the last write, whether more come or not
                    self._condition.wait(CULL_INTERVAL_S if self._dirty else None)
                if self._closed:
                    return
                if self._pending and not self._flushing:
                    self._condition.wait(WRITE_LINGER_S)
                batch = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._writing = True
                cull = self._dirty or bool(batch)
                cull = cull and (self._flushing > 0 or self._cull_due())
            self._step(batch, sync=self._disk.sync_due, cull=cull)

    def _has_work(self) -> bool:
        """Called with the condition held."""
        return bool(
            self._pending
            or self._closed
            or self._disk.sync_asked
            or (self._dirty and (self._flushing or self._cull_due()))
        )

    def _cull_due(self) -> bool:
        return time.monotonic() - self._culled_at >= CULL_INTERVAL_S

    def _step(self, batch: list[tuple[bytes, bytes, float]], sync: bool, cull: bool) -> None:
        try:
            if batch:
                self._disk.set_many(batch)
            if cull:
                evicted = self._disk.cull()
                if evicted:
                    self._on_evict(evicted)
            if sync:
                self._disk.sync()
        except Exception:  # the thread must outlive any bug, or writes would silently stop
            logger.exception("disk cache write failed")
        finally:
            with self._condition:
                if cull:
                    self._dirty, self._culled_at = False, time.monotonic()
                elif batch:
                    self._dirty = True
                self._writing = False
                self._condition.notify_all()
