"""The response cache: memory LRU in front of a shared disk tier, with single flight per key."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tensorgate.codec.tensors import TensorCodecError
from tensorgate.server.cache.codec import CorruptValueError, Outputs, decode_outputs, encode_outputs
from tensorgate.server.cache.disk import DiskTier
from tensorgate.server.cache.flight import SingleFlight
from tensorgate.server.cache.key import request_key
from tensorgate.server.cache.memory import MemoryLRU
from tensorgate.server.cache.observer import CacheObserver, CacheStats, Outcome
from tensorgate.server.cache.writer import MAX_PENDING_BYTES, DiskWriter
from tensorgate.server.errors import DeadlineExceededError, RequestCancelledError

if TYPE_CHECKING:
    from tensorgate.server.settings import Settings

logger = logging.getLogger(__name__)

#: Errors of the leader's request rather than of its inputs: waiters do not share them.
LEADERS_OWN_ERRORS = (DeadlineExceededError, RequestCancelledError)
#: How long close() waits for queued disk writes to land.
CLOSE_TIMEOUT_S = 5.0


class ResponseCache:
    """Answers repeated requests without a model run. Thread-safe; one per process.

    ``directory=None`` or ``disk_bytes=0`` keeps it in memory only. Errors are never cached; a
    failing disk directory degrades to memory only (one warning) and never fails a request.
    """

    key = staticmethod(request_key)

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        memory_bytes: int,
        disk_bytes: int,
        observer: CacheObserver | None = None,
        write_queue_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.observer: CacheObserver = observer if observer is not None else CacheStats()
        self._memory = MemoryLRU(memory_bytes)
        self._flights = SingleFlight()
        self._disk: DiskTier | None = None
        self._writer: DiskWriter | None = None
        if directory is not None and disk_bytes > 0:
            disk = DiskTier(Path(directory), disk_bytes)
            if disk.enabled:
                self._disk = disk
                self._writer = DiskWriter(
                    disk,
                    lambda count: self.observer.on_evict("disk", count),
                    max_pending_bytes=write_queue_bytes,
                )

    @classmethod
    def from_settings(
        cls, settings: Settings, observer: CacheObserver | None = None
    ) -> ResponseCache | None:
        """The server's cache, or None when ``--no-cache`` turned it off."""
        if not settings.cache_enabled:
            return None
        return cls(
            settings.cache_dir,
            memory_bytes=settings.cache_memory_bytes,
            disk_bytes=settings.cache_disk_bytes,
            observer=observer,
            write_queue_bytes=settings.cache_write_queue_bytes,
        )

    @property
    def disk_enabled(self) -> bool:
        return self._disk is not None and self._disk.enabled

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the memory tier (encoded size of its entries)."""
        return self._memory.bytes

    def disk_bytes(self) -> int:
        """Bytes held by the disk tier, all processes together (one SQLite query: for scrapes)."""
        return self._disk.volume() if self._disk is not None else 0

    def begin(self, model: str, key: bytes) -> Lookup:
        """The first step of a lookup: a hit, the flight to wait for, or the lead of a miss.

        The caller drives the rest (no callback): a leader computes and calls :meth:`fill` or
        :meth:`abandon`; a follower waits for ``lookup.flight`` and reads it with :func:`shared`.
        """
        start = time.monotonic()
        outputs = self._memory.get(key)
        if outputs is not None:
            self.observer.on_hit(model, Outcome.MEMORY_HIT, time.monotonic() - start)
            return Lookup(start, dict(outputs), Outcome.MEMORY_HIT)
        flight, leader = self._flights.join(key)
        if not leader:
            return Lookup(start, None, Outcome.SHARED_HIT, flight)
        try:
            stored = self._from_disk(key)
        except BaseException as error:  # waiters must wake whatever happens here
            self._flights.fail(key, error)
            raise
        if stored is not None:
            self._flights.succeed(key, stored)
            self.observer.on_hit(model, Outcome.DISK_HIT, time.monotonic() - start)
            return Lookup(start, dict(stored), Outcome.DISK_HIT)
        self.observer.on_miss(model, time.monotonic() - start)
        return Lookup(start, None, Outcome.MISS)

    def fill(self, key: bytes, outputs: Outputs, ttl_s: float) -> None:
        """A leader's computed outputs: stored in both tiers and handed to its followers."""
        try:
            shared = self._store(key, outputs, ttl_s)
        except BaseException as error:
            self._flights.fail(key, error)
            raise
        self._flights.succeed(key, shared)

    def abandon(self, key: bytes, error: BaseException) -> None:
        """A leader's computation failed: its followers get the error (or retry, see below)."""
        self._flights.fail(key, error)

    def on_shared(self, model: str, lookup: Lookup) -> None:
        self.observer.on_hit(model, Outcome.SHARED_HIT, time.monotonic() - lookup.started)

    def get_or_compute(
        self,
        model: str,
        key: bytes,
        compute: Callable[[], Outputs],
        *,
        deadline: float | None = None,
        ttl_s: float = 0.0,
    ) -> tuple[Outputs, Outcome]:
        """The outputs under ``key``, computing and storing them on a miss (a blocking driver of
        :meth:`begin`, for callers that compute in their own thread).

        Identical concurrent misses run ``compute`` once; the others wait for it until their own
        ``deadline`` (``time.monotonic()``), then raise DeadlineExceededError. They share the
        leader's error, except one of :data:`LEADERS_OWN_ERRORS` (its deadline passed, its caller
        went away): then they try again, and one of them leads. Returned hits are read-only arrays.
        """
        while True:
            lookup = self.begin(model, key)
            if lookup.outputs is not None:
                return lookup.outputs, lookup.outcome
            if lookup.flight is None:
                try:
                    outputs = compute()
                except BaseException as error:
                    self.abandon(key, error)
                    raise
                self.fill(key, outputs, ttl_s)
                return outputs, Outcome.MISS
            outputs = shared(_wait(lookup.flight, deadline))
            if outputs is not None:
                self.on_shared(model, lookup)
                return outputs, Outcome.SHARED_HIT

    def flush(self, timeout_s: float) -> bool:
        """Waits until queued disk writes have landed; False on timeout. For tests and shutdown."""
        return self._writer.flush(timeout_s) if self._writer is not None else True

    def close(self) -> None:
        """Lands queued disk writes, stops the writer thread and closes the disk tier."""
        if self._writer is not None:
            self._writer.close(CLOSE_TIMEOUT_S)
        if self._disk is not None:
            self._disk.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _from_disk(self, key: bytes) -> Outputs | None:
        if self._disk is None:
            return None
        found = self._disk.get(key)
        if found is None:
            return None
        value, ttl_left = found
        if ttl_left is not None and ttl_left <= 0:
            return None
        try:
            outputs = decode_outputs(value, key)
        except CorruptValueError as error:
            logger.warning("corrupted disk cache entry %s treated as a miss: %s", key.hex(), error)
            self._disk.delete(key)
            return None
        self._remember(key, outputs, len(value), ttl_left or 0.0)
        return outputs

    def _store(self, key: bytes, outputs: Outputs, ttl_s: float) -> Outputs:
        """Files fresh outputs in both tiers; returns the read-only copy that waiters share."""
        try:
            value = encode_outputs(key, outputs)
        except TensorCodecError as error:
            logger.warning("outputs of a request cannot be cached: %s", error)
            return outputs
        shared = {name: _frozen_copy(array) for name, array in outputs.items()}
        self._remember(key, shared, len(value), ttl_s)
        if self._writer is not None:
            self._writer.submit(key, value, ttl_s)
        return shared

    def _remember(self, key: bytes, outputs: Outputs, size: int, ttl_s: float) -> None:
        evicted = self._memory.put(key, outputs, size, ttl_s)
        if evicted:
            self.observer.on_evict("memory", evicted)


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    """A compact, read-only copy: a row view would keep its whole batch alive in the memory tier,
    beyond the bytes it is accounted for."""
    copy = np.array(array, copy=True, order="C")
    copy.flags.writeable = False
    return copy


def _wait(flight: Future[Outputs], deadline: float | None) -> Future[Outputs]:
    """The flight, once done; DeadlineExceededError when ``deadline`` passes first."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    done, _ = futures.wait([flight], timeout)
    if not done:
        raise DeadlineExceededError(
            "deadline passed while waiting for an identical request's result"
        )
    return flight


def shared(flight: Future[Outputs]) -> Outputs | None:
    """A finished flight's outputs (a copy of the dict), or its error; None when the error was the
    leader's own request's (try again)."""
    if isinstance(flight.exception(), LEADERS_OWN_ERRORS):
        return None
    return dict(flight.result())


@dataclass(slots=True)
class Lookup:
    """Where :meth:`ResponseCache.begin` left a request: ``outputs`` on a hit; else ``flight`` to
    wait for (a follower), or neither (the leader of a miss, which must fill or abandon)."""

    started: float
    outputs: Outputs | None
    outcome: Outcome
    flight: Future[Outputs] | None = None
