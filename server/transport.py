"""gRPC server options shared by the worker and the benchmark's echo server, so both pay the same."""

from __future__ import annotations

#: Calls that reach the server faster than handler threads take them wait in gRPC's core. Its default
#: bounds (1000, hard 3000) CANCEL the calls beyond; a server under overload should answer them late
#: or with RESOURCE_EXHAUSTED (maximum_concurrent_rpcs), never cancel them silently.
MAX_PENDING_REQUESTS = 100_000


def server_options(max_message_bytes: int | None = None) -> list[tuple[str, int]]:
    options = [
        ("grpc.so_reuseport", 0),
        ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_REQUESTS),
    ]
    if max_message_bytes is not None:
        options += [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    return options
