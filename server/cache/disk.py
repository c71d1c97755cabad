"""The disk tier: a ``diskcache.Cache`` shared by every worker process of a host, surviving restarts.

Any failure of the directory itself (unwritable, full, corrupted) turns the tier off for the life of
this process, with one warning: the cache must never fail a request. A lock held too long by another
process is not such a failure; that one operation is skipped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import diskcache

from tensorgate.server.cache.safe_disk import FILE_MODE, BytesOnlyDisk, UntrustedRowError

logger = logging.getLogger(__name__)

DATABASE_NAME = "cache.db"
#: SQLite busy timeout: how long a lookup may wait for another process's write transaction.
LOCK_TIMEOUT_S = 0.5
_BROKEN = (OSError, sqlite3.Error)


class DiskTier:
    """Keys are 32-byte digests, values encoded bytes: diskcache stores both raw, never pickled,
    and reads back nothing else (:class:`BytesOnlyDisk`)."""

    def __init__(self, directory: Path, size_limit: int) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: diskcache.Cache | None = None
        self._warned = False
        self._warned_untrusted = False
        try:
            # 0o700: answers may be private. mkdir leaves an existing directory's mode alone.
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # created 0600 before SQLite opens it; SQLite gives its -wal and -shm files that mode
            os.close(os.open(directory / DATABASE_NAME, os.O_CREAT | os.O_WRONLY, FILE_MODE))
            self._cache = diskcache.Cache(
                str(directory),
                disk=BytesOnlyDisk,
                timeout=LOCK_TIMEOUT_S,
                size_limit=size_limit,
                eviction_policy="least-recently-used",
                # culled explicitly by cull(), which reports how many entries went
                cull_limit=0,
            )
        except _BROKEN as error:
            self._disable(error)

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def get(self, key: bytes) -> tuple[bytes, float | None] | None:
        """The value under ``key`` and its remaining TTL in seconds (None: no TTL), or None.

        With the least-recently-used policy, ``Cache.get`` opens a write transaction (it records the
        access time), so every lookup would queue on SQLite's one write lock. A read-only
        membership test comes first: a miss, the common case of a cold workload, never writes.
        """
        cache = self._cache
        if cache is None:
            return None
        try:
            if key not in cache:
                return None
            value, expire_time = cache.get(key, expire_time=True)
        except diskcache.Timeout:
            return None
        except UntrustedRowError as error:
            self._warn_untrusted(error)
            return None
        except _BROKEN as error:
            self._disable(error)
            return None
        if not isinstance(value, bytes):
            return None
        # diskcache keeps expiry in wall-clock time, the only clock that processes share
        return value, None if expire_time is None else expire_time - time.time()

    def set_many(self, entries: Sequence[tuple[bytes, bytes, float]]) -> None:
        """Writes ``(key, value, ttl_s)`` entries in one transaction: one commit for them all."""
        cache = self._cache
        if cache is None:
            return
        try:
            with cache.transact():
                for key, value, ttl_s in entries:
                    cache.set(key, value, expire=ttl_s if ttl_s > 0 else None)
        except diskcache.Timeout:
            logger.debug("disk cache busy; %d entries were not written", len(entries))
        except _BROKEN as error:
            self._disable(error)

    def delete(self, key: bytes) -> None:
        cache = self._cache
        if cache is None:
            return
        try:
            cache.delete(key)
        except diskcache.Timeout:
            pass
        except _BROKEN as error:
            self._disable(error)

    def cull(self) -> int:
        """Removes expired entries, then least recently used ones down to the size limit; returns
        how many went."""
        cache = self._cache
        if cache is None:
            return 0
        try:
            return int(cache.cull())
        except diskcache.Timeout as timeout:
            return int(timeout.args[0]) if timeout.args else 0
        except _BROKEN as error:
            self._disable(error)
            return 0

    def volume(self) -> int:
        """Bytes on disk: the SQLite file and the value files."""
        cache = self._cache
        if cache is None:
            return 0
        try:
            return int(cache.volume())
        except _BROKEN as error:
            self._disable(error)
            return 0

    def close(self) -> None:
        with self._lock:
            cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def _warn_untrusted(self, error: UntrustedRowError) -> None:
        """A planted row answers a miss; the first one is logged."""
        with self._lock:
            first, self._warned_untrusted = not self._warned_untrusted, True
        if first:
            logger.warning(
                "disk cache at %s holds a row it did not write (%s): answered as a miss; "
                "someone else can write this directory",
                self.directory,
                error,
            )

    def _disable(self, error: BaseException) -> None:
        with self._lock:
            cache, self._cache = self._cache, None
            first, self._warned = not self._warned, True
        if first:
            logger.warning(
                "disk cache at %s is unusable (%s: %s); continuing with the in-memory cache only",
                self.directory,
                type(error).__name__,
                error,
            )
        if cache is not None:
            try:
                cache.close()
            except _BROKEN:
                logger.debug("closing the broken disk cache failed too", exc_info=True)
