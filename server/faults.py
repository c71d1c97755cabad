"""Fault injection for tests of the balancer: added latency and a share of failures. Off by default.

Set ``TENSORGATE_FAULT_LATENCY_MS`` and ``TENSORGATE_FAULT_ERROR_RATE`` on one worker to slow or fail it.
"""

from __future__ import annotations

import random

from tensorgate.server.errors import ServerUnavailableError


class FaultInjector:
    def __init__(self, latency_ms: float = 0.0, error_rate: float = 0.0) -> None:
        self.latency_s = latency_ms / 1000.0
        self.error_rate = error_rate
        self.enabled = self.latency_s > 0 or self.error_rate > 0

    def maybe_fail(self) -> None:
        """Fails with UNAVAILABLE at the configured rate (after the caller has slept latency_s)."""
        if self.error_rate > 0 and random.random() < self.error_rate:
            raise ServerUnavailableError(
                "injected fault (TENSORGATE_FAULT_ERROR_RATE)", reason="fault"
            )
