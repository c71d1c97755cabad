"""How long to wait before restarting a process that died."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Doubling delays from ``initial`` up to ``cap``; a process that ran ``stable_seconds`` starts over.

    A worker killed once comes back almost at once; one that crashes at every start is retried ever
    more slowly instead of spinning.
    """

    initial: float = 0.25
    cap: float = 10.0
    stable_seconds: float = 10.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        """The delay before the next start of a process that died after running ``ran_for`` s."""
        self.failures = 1 if ran_for >= self.stable_seconds else self.failures + 1
        return min(self.cap, self.initial * 2 ** (self.failures - 1))
