"""Channel options and the retry policy, shared by Client and AsyncClient."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ChannelOptions:
    """gRPC channel settings: keep-alive, message size limits and compression."""

    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    keepalive_without_calls: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    compression: grpc.Compression | None = None

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, on UNAVAILABLE only, a bounded number of times."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (0-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
        return random.uniform(0.0, ceiling)

    @staticmethod
    def retryable(code: grpc.StatusCode | None) -> bool:
        return code == grpc.StatusCode.UNAVAILABLE


NO_RETRY = RetryPolicy(max_attempts=1)
