"""Channel options and the retry policy, shared by Client and AsyncClient."""

from __future__ import annotations

import json
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


#: gRPC clamps a retry policy's maxAttempts to this.
GRPC_MAX_ATTEMPTS = 5
SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE by gRPC itself (its service config), inside one total budget.

    - at most ``max_attempts`` attempts in all (gRPC allows 5), with exponential backoff and jitter;
    - every attempt and every pause within the call's one deadline (``timeout``): no attempt starts
      after it, and the server sees what is left of it;
    - a retry budget per channel (gRPC's retry throttling): ``throttle_max_tokens`` tokens, one
      failure takes one, one success gives back ``throttle_token_ratio``; below half, no retries.
      When a server is down for good, callers stop multiplying the load instead of tripling it.

    Behind Envoy, each attempt may itself be retried by Envoy (docs/security.md, "Retries").
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    throttle_max_tokens: int = 10
    throttle_token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= GRPC_MAX_ATTEMPTS:
            raise ValueError(
                f"max_attempts must be 1..{GRPC_MAX_ATTEMPTS}, got {self.max_attempts}"
            )
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.multiplier <= 0:
            raise ValueError("backoff durations and the multiplier must be positive")

    def service_config(self) -> str:
        """The JSON service config that makes gRPC retry the inference service's calls."""
        if self.max_attempts == 1:
            return json.dumps({"methodConfig": [{"name": [{"service": SERVICE}]}]})
        return json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": SERVICE}],
                        "retryPolicy": {
                            "maxAttempts": self.max_attempts,
                            "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                            "maxBackoff": f"{self.max_backoff_s:.3f}s",
                            "backoffMultiplier": self.multiplier,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ],
                "retryThrottling": {
                    "maxTokens": self.throttle_max_tokens,
                    "tokenRatio": self.throttle_token_ratio,
                },
            }
        )

    def channel_options(self) -> list[tuple[str, str | int]]:
        return [("grpc.enable_retries", 1), ("grpc.service_config", self.service_config())]


NO_RETRY = RetryPolicy(max_attempts=1)
