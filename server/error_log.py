"""Logging of unexpected errors: the traceback once per distinct error per minute, not per request.

A bug hit by every request would otherwise write a traceback per request. An error is "distinct"
by its type and the place it was raised (file and line), not by its message, which may hold
request data.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

#: seconds between two tracebacks of the same error
REPEAT_SECONDS = 60.0
#: distinct errors remembered; beyond, the oldest are forgotten (memory stays bounded)
MAX_REMEMBERED = 256


class ErrorLog:
    """Thread-safe; ``report`` logs the traceback the first time, then at most once a minute with
    the count of the repeats it held back."""

    def __init__(self, logger: logging.Logger, repeat_seconds: float = REPEAT_SECONDS) -> None:
        self._logger = logger
        self._repeat_seconds = repeat_seconds
        self._lock = threading.Lock()
        #: signature -> (when its traceback was last logged, repeats held back since)
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}

    def report(self, error: BaseException, what: str) -> None:
        signature = _signature(error)
        now = time.monotonic()
        with self._lock:
            logged_at, held = self._seen.get(signature, (-self._repeat_seconds, 0))
            if now - logged_at < self._repeat_seconds:
                self._seen[signature] = (logged_at, held + 1)
                return
            self._seen.pop(signature, None)
            self._seen[signature] = (now, 0)
            while len(self._seen) > MAX_REMEMBERED:
                self._seen.pop(next(iter(self._seen)))
        repeats = f" ({held} more like it in the last minute)" if held else ""
        self._logger.error("unexpected failure in %s%s", what, repeats, exc_info=error)


def _signature(error: BaseException) -> tuple[str, ...]:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (type(error).__module__, type(error).__qualname__, where)
