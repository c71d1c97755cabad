"""A plaintext port that answers ``grpc.health.v1`` and nothing else.

Kubernetes' gRPC probes cannot speak TLS. When the worker's gRPC port has TLS, ``--health-port``
gives the kubelet a port of its own: it shares the worker's health servicer, so it says SERVING,
NOT_SERVING and draining exactly as the main port does, and it exposes no other RPC.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2_grpc

PROBE_THREADS = 2


def start_probe_server(
    servicer: health.HealthServicer, host: str, port: int
) -> tuple[grpc.Server, int]:
    """Serves ``servicer`` alone on ``host:port`` in plaintext; returns the server and its port."""
    server = grpc.server(ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="health-probe"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the health port {host}:{port}")
    server.start()
    return server, bound


async def start_aio_probe_server(
    servicer: health.aio.HealthServicer, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """The same on the grpc.aio core's event loop (its health servicer is the asyncio one)."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the health port {host}:{port}")
    await server.start()
    return server, bound
