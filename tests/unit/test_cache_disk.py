"""The disk tier: persistence, mode 0700, LRU size limit, TTL, and degradation when the directory or
an entry is damaged. Real diskcache on a temporary directory."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
import time
from pathlib import Path

import diskcache
import numpy as np
import pytest

from tensorgate.server.cache import CacheStats, Outcome, ResponseCache, decode_outputs
from tensorgate.server.cache.disk import DiskTier, KeyFilter
from tensorgate.server.cache.safe_disk import BytesOnlyDisk
from tests.support.waiting import wait_until

WAIT_S = 10.0


def key_of(seed: int) -> bytes:
    return ResponseCache.key(
        model="m", model_digest="d", inputs={"x": np.full(4, seed, dtype=np.float32)}
    )


def answer(seed: int, size: int = 4) -> dict[str, np.ndarray]:
    return {"y": np.full(size, seed, dtype=np.float32), "label": np.array([seed], dtype=np.int64)}


def never() -> dict[str, np.ndarray]:
    raise AssertionError("the model ran although the answer was cached")


def open_cache(directory: Path, **overrides) -> ResponseCache:
    options = {"memory_bytes": 1 << 20, "disk_bytes": 1 << 24} | overrides
    return ResponseCache(directory, **options)


def cache_warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("tensorgate.server.cache") and r.levelno >= logging.WARNING
    ]


def test_answers_survive_a_restart(tmp_path) -> None:
    with open_cache(tmp_path / "c") as cache:
        assert cache.get_or_compute("m", key_of(1), lambda: answer(1))[1] is Outcome.MISS
    stats = CacheStats()
    with open_cache(tmp_path / "c", observer=stats) as restarted:
        outputs, outcome = restarted.get_or_compute("m", key_of(1), never)
        assert outcome is Outcome.DISK_HIT and outcome.parameter == "hit"
        np.testing.assert_array_equal(outputs["y"], answer(1)["y"])
        np.testing.assert_array_equal(outputs["label"], answer(1)["label"])
        assert restarted.get_or_compute("m", key_of(1), never)[1] is Outcome.MEMORY_HIT
    assert stats.hits == {("m", "disk"): 1, ("m", "memory"): 1}


def test_large_answers_stored_as_files_survive_a_restart_too(tmp_path) -> None:
    with open_cache(tmp_path / "c") as cache:
        cache.get_or_compute("m", key_of(2), lambda: answer(2, size=50_000))  # 200 KB
    with open_cache(tmp_path / "c", memory_bytes=0) as restarted:
        outputs, outcome = restarted.get_or_compute("m", key_of(2), never)
        assert outcome is Outcome.DISK_HIT and outputs["y"].shape == (50_000,)


def test_directory_is_created_with_mode_0700(tmp_path) -> None:
    with open_cache(tmp_path / "deep" / "c") as cache:
        assert cache.disk_enabled
    assert stat.S_IMODE((tmp_path / "deep" / "c").stat().st_mode) == 0o700


def test_disk_tier_stays_within_its_size_limit_evicting_least_recently_used(tmp_path) -> None:
    stats = CacheStats()
    limit = 400_000
    with open_cache(tmp_path / "c", memory_bytes=0, disk_bytes=limit, observer=stats) as cache:
        for seed in range(200):  # ~4 KB each; diskcache culls 10 least recently used at a time
            cache.get_or_compute("m", key_of(seed), lambda s=seed: answer(s, size=1_000))
            assert cache.flush(WAIT_S)
            # seed 0 is read after every write: the most recently used, never evicted
            assert cache.get_or_compute("m", key_of(0), never)[1] is Outcome.DISK_HIT
        assert cache.disk_bytes() <= limit
        assert stats.evictions["disk"] > 0
        assert cache.get_or_compute("m", key_of(1), lambda: answer(1, 1_000))[1] is Outcome.MISS
        assert cache.get_or_compute("m", key_of(199), never)[1] is Outcome.DISK_HIT


def test_disk_entries_expire_after_their_ttl(tmp_path) -> None:
    ttl = 1.0
    with open_cache(tmp_path / "c") as cache:
        written = time.time()
        cache.get_or_compute("m", key_of(3), lambda: answer(3), ttl_s=ttl)
    with open_cache(tmp_path / "c") as fresh:
        if time.time() < written + ttl:  # the machine may have stalled past the TTL already
            assert fresh.get_or_compute("m", key_of(3), never, ttl_s=ttl)[1] is Outcome.DISK_HIT
    deadline = time.monotonic() + WAIT_S
    while time.time() <= written + ttl and time.monotonic() < deadline:
        time.sleep(0.05)
    with open_cache(tmp_path / "c") as later:
        assert later.get_or_compute("m", key_of(3), lambda: answer(3), ttl_s=ttl)[1] is Outcome.MISS


def test_a_corrupted_entry_is_a_miss_and_is_replaced(tmp_path, caplog) -> None:
    with open_cache(tmp_path / "c") as cache:
        cache.get_or_compute("m", key_of(4), lambda: answer(4))
    with diskcache.Cache(str(tmp_path / "c")) as raw:  # damage the stored value in place
        value = bytearray(raw[key_of(4)])
        value[-1] ^= 0xFF
        raw[key_of(4)] = bytes(value)
    with open_cache(tmp_path / "c") as cache:
        outputs, outcome = cache.get_or_compute("m", key_of(4), lambda: answer(4))
        assert outcome is Outcome.MISS
        np.testing.assert_array_equal(outputs["y"], answer(4)["y"])
    assert any("corrupted" in r.getMessage() for r in cache_warnings(caplog))
    with open_cache(tmp_path / "c") as cache:
        assert cache.get_or_compute("m", key_of(4), never)[1] is Outcome.DISK_HIT


def test_a_damaged_value_file_is_a_miss(tmp_path) -> None:
    with open_cache(tmp_path / "c") as cache:
        cache.get_or_compute("m", key_of(5), lambda: answer(5, size=50_000))
    (value_file,) = [p for p in (tmp_path / "c").rglob("*.val")]
    data = bytearray(value_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    value_file.write_bytes(bytes(data))
    with open_cache(tmp_path / "c") as cache:
        outputs, outcome = cache.get_or_compute("m", key_of(5), lambda: answer(5, size=50_000))
        assert outcome is Outcome.MISS
        np.testing.assert_array_equal(outputs["y"], answer(5, size=50_000)["y"])


def test_a_corrupted_database_degrades_to_memory_with_one_warning(tmp_path, caplog) -> None:
    directory = tmp_path / "c"
    with open_cache(directory) as cache:
        cache.get_or_compute("m", key_of(6), lambda: answer(6))
    for path in directory.glob("cache.db*"):
        path.write_bytes(b"this is not an SQLite database " * 512)
    with open_cache(directory) as cache:
        assert not cache.disk_enabled
        for _ in range(3):
            for seed in (6, 7):
                outputs, _ = cache.get_or_compute("m", key_of(seed), lambda s=seed: answer(s))
                assert outputs["y"][0] == seed
        assert cache.get_or_compute("m", key_of(7), never)[1] is Outcome.MEMORY_HIT
    assert len(cache_warnings(caplog)) == 1
    assert "unusable" in cache_warnings(caplog)[0].getMessage()


def test_a_database_corrupted_while_serving_never_fails_a_request(tmp_path, caplog) -> None:
    directory = tmp_path / "c"
    with open_cache(directory) as cache:
        cache.get_or_compute("m", key_of(0), lambda: answer(0))
        assert cache.flush(WAIT_S)
        for path in directory.glob("cache.db*"):
            path.write_bytes(b"\xde\xad" * 4096)
        for seed in range(1, 20):
            outputs, _ = cache.get_or_compute("m", key_of(seed), lambda s=seed: answer(s))
            assert outputs["y"][0] == seed
        assert cache.flush(WAIT_S)
        assert cache.get_or_compute("m", key_of(19), never)[1] is Outcome.MEMORY_HIT
    assert len(cache_warnings(caplog)) <= 1


FULL_DISK_CHILD = r"""
import json, resource, signal, sys
import numpy as np
import pytest
from tensorgate.server.cache import ResponseCache

# A disk that fills at 300 kB: writes beyond it fail with EFBIG instead of killing the process.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
cache = ResponseCache(sys.argv[1], memory_bytes=1 << 22, disk_bytes=1 << 30)
enabled_at_start = cache.disk_enabled
answered = 0
for i in range(100):
    key = cache.key(model="m", model_digest="d", inputs={"x": np.full(3, i, np.int32)})
    outputs, _ = cache.get_or_compute("m", key, lambda: {"y": np.full(1000, i, np.float32)})
    answered += int(outputs["y"][0] == i)
    cache.flush(10.0)
print(json.dumps({"start": enabled_at_start, "end": cache.disk_enabled, "answered": answered}))
cache.close()
"""


def test_a_full_disk_degrades_to_memory_with_one_warning(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout) == {"start": True, "end": False, "answered": 100}
    assert done.stderr.count("is unusable") == 1, done.stderr


def test_an_unwritable_directory_degrades_to_memory_with_one_warning(tmp_path, caplog) -> None:
    # Tests run as root, for whom chmod 0500 does not deny writes; a "directory" inside a regular
    # file cannot be created by anyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with open_cache(blocker / "cache") as cache:
        assert not cache.disk_enabled
        for _ in range(2):
            outputs, _ = cache.get_or_compute("m", key_of(8), lambda: answer(8))
            assert outputs["y"][0] == 8
        assert cache.get_or_compute("m", key_of(8), never)[1] is Outcome.MEMORY_HIT
        assert cache.disk_bytes() == 0
    assert len(cache_warnings(caplog)) == 1


def test_disk_bytes_zero_means_memory_only(tmp_path) -> None:
    with open_cache(tmp_path / "c", disk_bytes=0) as cache:
        assert not cache.disk_enabled
        cache.get_or_compute("m", key_of(1), lambda: answer(1))
    assert not (tmp_path / "c").exists()


def test_rows_written_in_bulk_are_rows_diskcache_itself_reads_and_counts(tmp_path) -> None:
    small, large = answer(1), answer(2, size=20_000)  # in the row; in a value file (>= 32 KiB)
    with open_cache(tmp_path / "c") as cache:
        cache.get_or_compute("m", key_of(1), lambda: small)
        cache.get_or_compute("m", key_of(2), lambda: large)
        assert cache.flush(WAIT_S)
    with diskcache.Cache(str(tmp_path / "c"), disk=BytesOnlyDisk) as plain:
        assert len(plain) == 2
        for seed, outputs in ((1, small), (2, large)):
            stored = decode_outputs(plain.get(key_of(seed)), key_of(seed))
            np.testing.assert_array_equal(stored["y"], outputs["y"])
        assert plain.volume() > large["y"].nbytes  # the value file is counted


def test_the_disk_tier_is_culled_soon_after_writes_stop_without_a_flush(tmp_path) -> None:
    stats = CacheStats()
    limit = 200_000
    with open_cache(tmp_path / "c", disk_bytes=limit, observer=stats) as cache:
        for seed in range(100):  # ~4 KB each, about twice the limit
            cache.get_or_compute("m", key_of(seed), lambda s=seed: answer(s, size=1_000))
        wait_until(lambda: stats.evictions["disk"] > 0, WAIT_S, "a cull after the writes")
        wait_until(lambda: cache.disk_bytes() <= limit, WAIT_S, "the disk tier back in bound")


@pytest.fixture
def sqlite_reads(monkeypatch) -> list[bytes]:
    """The keys the disk tier asks SQLite about (its membership test), in order."""
    reads: list[bytes] = []
    original = diskcache.Cache.__contains__
    monkeypatch.setattr(
        diskcache.Cache, "__contains__", lambda c, k: reads.append(k) or original(c, k)
    )
    return reads


def test_a_miss_the_key_filter_answers_never_reads_sqlite(tmp_path, sqlite_reads) -> None:
    reads = sqlite_reads
    with open_cache(tmp_path / "c", memory_bytes=0) as cache:
        cache.get_or_compute("m", key_of(1), lambda: answer(1))
        assert cache.flush(WAIT_S)

        def lookups_read_sqlite_only_for_what_is_there() -> bool:
            reads.clear()
            hit = cache.get_or_compute("m", key_of(1), never)[1] is Outcome.DISK_HIT
            for seed in range(2, 50):
                cache.get_or_compute("m", key_of(seed), lambda s=seed: answer(s))
            return hit and reads == [key_of(1)]  # the filter may be stale: asked, then synced

        wait_until(lookups_read_sqlite_only_for_what_is_there, WAIT_S, "the key filter in use")


def test_the_key_filter_never_forgets_a_key_and_rarely_imagines_one() -> None:
    rng = np.random.default_rng(7)
    keys = [rng.bytes(32) for _ in range(50_000)]
    key_filter = KeyFilter()
    for key in keys:
        key_filter.add(key)
    assert all(key_filter.may_hold(key) for key in keys)
    others = [rng.bytes(32) for _ in range(20_000)]
    assert sum(key_filter.may_hold(key) for key in others) < 20  # ~0 expected at this fill


def test_a_sync_brings_another_writers_keys_into_the_filter_and_nothing_else(
    tmp_path, sqlite_reads
) -> None:
    reads = sqlite_reads
    reader = DiskTier(tmp_path / "c", 1 << 24)
    try:
        with open_cache(tmp_path / "c", memory_bytes=0) as writer:
            reader.sync()  # the filter of an empty disk
            writer.get_or_compute("m", key_of(1), lambda: answer(1))
            assert writer.flush(WAIT_S)

        def only_the_written_key_is_read() -> bool:
            reads.clear()
            reader.sync()  # as a busy process's writer thread does every FILTER_FRESH_S / 2
            found = reader.get(key_of(1)) is not None and reader.get(key_of(2)) is None
            return found and reads == [key_of(1)]  # else the filter went stale meanwhile: again

        wait_until(only_the_written_key_is_read, WAIT_S, "the other writer's key in the filter")
    finally:
        reader.close()
