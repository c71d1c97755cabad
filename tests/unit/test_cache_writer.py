"""The disk-write queue is bounded in bytes as well as in entries: a slow disk never grows the process."""

from __future__ import annotations

import threading
from pathlib import Path

from tensorgate.server.cache.disk import DiskTier
from tensorgate.server.cache.writer import DiskWriter

WAIT_S = 10.0


class StalledDisk(DiskTier):
    """A real disk tier whose writes wait until released: the queue fills behind it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, 1 << 30)
        self.release = threading.Event()
        self.writing = threading.Event()

    def set_many(self, entries: object) -> None:
        self.writing.set()
        self.release.wait(WAIT_S)
        super().set_many(entries)  # type: ignore[arg-type]


def test_writes_beyond_the_byte_bound_are_dropped_and_the_rest_land(tmp_path: Path) -> None:
    disk = StalledDisk(tmp_path / "cache")
    writer = DiskWriter(disk, lambda count: None, max_pending=1000, max_pending_bytes=10_000)
    try:
        assert writer.submit(b"k" * 32, b"first", 0)
        assert disk.writing.wait(WAIT_S)  # the first write holds the writer thread
        accepted = [writer.submit(bytes([i]) * 32, b"v" * 3000, 0) for i in range(5)]
        assert accepted == [True, True, True, False, False]
        assert writer.pending_bytes == 9000
        disk.release.set()
        assert writer.flush(WAIT_S)
        assert writer.pending_bytes == 0
        assert disk.get(bytes([2]) * 32) is not None
        assert disk.get(bytes([4]) * 32) is None
    finally:
        disk.release.set()
        writer.close(WAIT_S)
        disk.close()
