"""The disk tier: a ``diskcache.Cache`` shared by every worker process of a host, surviving restarts.

A lookup that misses must not cost a SQLite read: under load, a read transaction per request
thread contends on SQLite's shared-memory locks (130 µs of CPU per read with 64 threads, against
7 µs alone). The tier keeps a Bloom filter of the keys the disk holds, brought up to date by the
writer thread (:meth:`DiskTier.sync`: the rows added since the last sync, by any process). A filter
synced less than :data:`FILTER_FRESH_S` ago answers "absent" on its own; an older one, or "maybe",
asks SQLite. So an idle process sees every landed write at once, and a busy one sees another
process's writes within :data:`FILTER_FRESH_S`; a key the filter misses (a rowid reused by SQLite)
costs a model run, never a wrong answer.

Any failure of the directory itself (unwritable, full, corrupted) turns the tier off for the life of
this process, with one warning: the cache must never fail a request. A lock held too long by another
process is not such a failure; that one operation is skipped.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import diskcache

from tensorgate.server.cache.safe_disk import FILE_MODE, BytesOnlyDisk, UntrustedRowError

logger = logging.getLogger(__name__)

DATABASE_NAME = "cache.db"
#: SQLite busy timeout: how long a lookup may wait for another process's write transaction.
LOCK_TIMEOUT_S = 0.5
_BROKEN = (OSError, sqlite3.Error)
#: How long a synced key filter may answer "absent" without asking SQLite.
FILTER_FRESH_S = 0.1
#: 2 MiB of filter bits, 4 probes: about 2% false positives at FILTER_KEYS keys.
FILTER_BITS = 1 << 24
FILTER_PROBES = 4
#: Keys added before the filter is rebuilt from the rows the disk holds now (evictions leave bits).
FILTER_KEYS = 2_000_000
#: rows in a rowid range, leaving out this tier's own (already in its filter; ``tag`` is its token)
_NEW_ROWS = "SELECT key FROM Cache WHERE rowid > ? AND rowid <= ? AND raw = 1 AND tag IS NOT ?"
_ROW = "(?, 1, ?, ?, ?, 0, ?, 0, 1, NULL, ?)"
_ROW_VALUES = _ROW.count("?")
#: a row as ``Cache.set`` writes a small bytes value (mode 1: raw, in the row; size 0: no file),
#: tagged with the writing tier's token
_UPSERT_INLINE = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES {rows}"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time,"
    " tag = excluded.tag, value = excluded.value WHERE filename IS NULL"
)


class _Busy(Exception):
    """Another process held SQLite's write lock longer than LOCK_TIMEOUT_S: this batch is skipped."""


class KeyFilter:
    """A Bloom filter over cache keys: "certainly absent" or "maybe present". Keys are SHA-256
    digests, already uniform, so three of their own bytes make each probe. One thread adds; any
    thread may ask."""

    __slots__ = ("_bits", "added")

    def __init__(self) -> None:
        self._bits = bytearray(FILTER_BITS // 8)
        self.added = 0

    def add(self, key: bytes) -> None:
        bits = self._bits
        for probe in range(0, 3 * FILTER_PROBES, 3):
            index = int.from_bytes(key[probe : probe + 3], "little")
            bits[index >> 3] |= 1 << (index & 7)
        self.added += 1

    def may_hold(self, key: bytes) -> bool:
        bits = self._bits
        for probe in range(0, 3 * FILTER_PROBES, 3):
            index = int.from_bytes(key[probe : probe + 3], "little")
            if not bits[index >> 3] & (1 << (index & 7)):
                return False
        return True


class DiskTier:
    """Keys are 32-byte digests, values encoded bytes: diskcache stores both raw, never pickled,
    and reads back nothing else (:class:`BytesOnlyDisk`)."""

    def __init__(self, directory: Path, size_limit: int) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: diskcache.Cache | None = None
        self._warned = False
        self._warned_untrusted = False
        self._filter: KeyFilter | None = None
        self._synced_at = -math.inf
        self._watermark = 0
        self._sync_asked = False
        #: the writer's wake-up: a lookup that found the filter stale asks for a sync
        self.on_stale: Callable[[], None] | None = None
        self._writer_db: sqlite3.Connection | None = None
        #: tags the rows this tier writes, so that its syncs skip them (0 is nobody's)
        self._token = secrets.randbits(62) + 1
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
        Before it, a fresh key filter answers most misses without SQLite.
        """
        cache = self._cache
        if cache is None:
            return None
        key_filter = self._filter
        if key_filter is not None and time.monotonic() - self._synced_at < FILTER_FRESH_S:
            if not key_filter.may_hold(key):
                return None
        elif not self._sync_asked and self.on_stale is not None:
            self._sync_asked = True
            self.on_stale()
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
        """Writes ``(key, value, ttl_s)`` entries; called by the writer thread only.

        ``Cache.set`` costs about 100 µs of Python per entry under load, so values small enough to
        live in the database row (below diskcache's min_file_size) go in one multi-row upsert, in
        the row format ``Cache.set`` writes (diskcache's triggers keep its count and size).
        An existing row that points to a value file is left alone (same key, same answer).
        Larger values take ``Cache.set``, which writes their files."""
        cache = self._cache
        if cache is None:
            return
        now, token = time.time(), self._token
        inline: list[tuple[object, ...]] = []
        files: list[tuple[bytes, bytes, float]] = []
        for key, value, ttl_s in entries:
            expire_time = now + ttl_s if ttl_s > 0 else None
            if len(value) < cache.disk.min_file_size:
                inline.append((key, now, expire_time, now, token, value))
            else:
                files.append((key, value, ttl_s))
        try:
            if inline:
                self._insert_inline(inline)
            if files:
                with cache.transact():
                    for key, value, ttl_s in files:
                        cache.set(key, value, expire=ttl_s if ttl_s > 0 else None, tag=token)
        except (diskcache.Timeout, _Busy):
            logger.debug("disk cache busy; %d entries were not written", len(entries))
            return
        except _BROKEN as error:
            self._disable(error)
            return
        key_filter = self._filter
        if key_filter is not None:
            for key, _, _ in entries:
                key_filter.add(key)

    def _insert_inline(self, rows: list[tuple[object, ...]]) -> None:
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _Busy from error  # another process held the lock past LOCK_TIMEOUT_S
            raise
        try:
            # one statement per chunk: executemany steps (and drops the GIL) once per row, and
            # each drop hands the GIL to a request thread and waits to get it back
            per_statement = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _ROW_VALUES
            for first in range(0, len(rows), per_statement):
                chunk = rows[first : first + per_statement]
                statement = _UPSERT_INLINE.format(rows=", ".join([_ROW] * len(chunk)))
                connection.execute(statement, [value for row in chunk for value in row])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # never leave the write lock held
                connection.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        """The writer thread's own connection (diskcache keeps one per thread as well)."""
        if self._writer_db is None:
            self._writer_db = sqlite3.connect(
                self.directory / DATABASE_NAME,
                timeout=LOCK_TIMEOUT_S,
                isolation_level=None,
                # used by the writer thread only; closed by close(), after that thread stopped
                check_same_thread=False,
            )
            self._writer_db.execute("PRAGMA synchronous = NORMAL")  # as diskcache's connections
        return self._writer_db

    @property
    def sync_asked(self) -> bool:
        return self._sync_asked

    @property
    def sync_due(self) -> bool:
        """Asked for, or half the filter's freshness gone: a writer that syncs whenever it is
        awake anyway keeps the filter fresh while requests flow."""
        return self._sync_asked or time.monotonic() - self._synced_at >= FILTER_FRESH_S / 2

    def sync(self) -> None:
        """Adds the keys of rows written since the last sync, by any process, to the key filter
        (rebuilt from every row when there is none yet or it has taken FILTER_KEYS keys). Runs on
        the writer thread."""
        self._sync_asked = False
        if self._cache is None:
            return
        started = time.monotonic()
        current = self._filter
        rebuild = current is None or current.added > FILTER_KEYS
        key_filter = KeyFilter() if rebuild or current is None else current
        watermark = 0 if rebuild else self._watermark  # rows above it are new since the last sync
        try:
            connection = self._connection()
            (newest,) = connection.execute("SELECT coalesce(max(rowid), 0) FROM Cache").fetchone()
            mine = 0 if rebuild else self._token  # a rebuild reads every row, this tier's too
            for (key,) in connection.execute(_NEW_ROWS, (watermark, newest, mine)):
                if isinstance(key, bytes):
                    key_filter.add(key)
        except _BROKEN as error:  # the lookups go on asking SQLite, which decides the tier's fate
            logger.debug("disk cache key filter not synced: %s", error)
            return
        self._filter, self._watermark, self._synced_at = key_filter, newest, started

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
            writer_db, self._writer_db = self._writer_db, None
        if cache is not None:
            cache.close()
        if writer_db is not None:
            writer_db.close()

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
