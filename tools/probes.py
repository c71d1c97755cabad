"""Small probes of local servers, shared by the benchmark, the tests and the tools: a free port, and
a server's grpc.health.v1 status."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def health_status(
    target: str,
    service: str = "",
    timeout: float = 1.0,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, str]] = (),
) -> int | None:
    """The grpc.health.v1 status of ``service`` at ``target``, or None when nothing answers.
    With ``credentials``, over TLS."""
    if credentials is None:
        opened = grpc.insecure_channel(target, options=options)
    else:
        opened = grpc.secure_channel(target, credentials, options=options)
    with opened as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return reply.status


def is_serving(target: str, service: str = "", timeout: float = 1.0) -> bool:
    return health_status(target, service, timeout) == SERVING
