"""The one bounded wait of the tests: poll a condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Polls ``condition()`` until it is true; returns the seconds it took. AssertionError naming
    ``what`` when ``timeout`` passes first."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)
