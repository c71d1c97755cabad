"""The progress bar of a benchmark: one bar over the planned seconds of every phase, on stderr."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Tick(Protocol):
    def __call__(self) -> None: ...


class BenchProgress:
    """``phase(description, seconds)`` advances the bar as time passes within the phase."""

    def __init__(self, total_seconds: float, enabled: bool = True) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("starting", total=max(total_seconds, 1e-9))
        self._done = 0.0

    @contextmanager
    def phase(self, description: str, seconds: float) -> Iterator[Tick]:
        """A phase planned to last ``seconds``; call the yielded tick to move the bar."""
        started = time.monotonic()
        self._progress.update(self._task, description=description)

        def tick() -> None:
            elapsed = min(time.monotonic() - started, seconds)
            self._progress.update(self._task, completed=self._done + elapsed)

        try:
            yield tick
        finally:
            self._done += seconds
            self._progress.update(self._task, completed=self._done)

    def __enter__(self) -> BenchProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
