"""A ``diskcache.Disk`` that only ever reads back bytes, from files inside its own directory.

Anyone who can write the cache directory can plant rows in ``cache.db``. diskcache's own Disk would
unpickle a row whose mode says pickle (running code as the server), and follow a row's filename
wherever it points, even to delete it. This one refuses both: such a row raises
:class:`UntrustedRowError` (the tier answers a miss), and a filename outside the directory is never
opened or deleted. The files it writes are 0600.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW

logger = logging.getLogger(__name__)

FILE_MODE = 0o600


class UntrustedRowError(Exception):
    """A row this cache never writes: pickled, text, or a filename outside the directory."""


class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """Stores and reads ``bytes`` only: small values inline, large ones in 0600 files."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> bytes:
        if mode == MODE_RAW and isinstance(value, bytes | memoryview):
            return bytes(value)
        if mode == MODE_BINARY and not read and filename is not None:
            path = self._inside(filename)
            if path is not None:
                flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                with open(os.open(path, flags), "rb") as reader:
                    return reader.read()
        raise UntrustedRowError(
            f"row of mode {mode} with filename {filename!r} is not one this cache writes"
        )

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if not isinstance(value, bytes) or read:
            raise TypeError(f"the cache stores bytes only, not {type(value).__name__}")
        size, mode, filename, db_value = super().store(value, read, key)
        if filename is not None:
            os.chmod(os.path.join(self._directory, filename), FILE_MODE)
        return size, mode, filename, db_value

    def remove(self, file_path: str) -> None:
        """Deletes a value file, never anything outside the directory."""
        if self._inside(file_path) is None:
            logger.warning(
                "disk cache: a row names %r, outside its directory: not deleted", file_path
            )
            return
        super().remove(file_path)

    def _inside(self, filename: object) -> str | None:
        """The real path of ``filename`` when it is a relative path inside the directory."""
        if not isinstance(filename, str) or not filename or os.path.isabs(filename):
            return None
        root = os.path.realpath(self._directory)
        path = os.path.realpath(os.path.join(root, filename))
        return path if os.path.commonpath([root, path]) == root and path != root else None
