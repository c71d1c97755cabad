"""The gRPC transport adapters: grpcio's thread-pool core and the grpc.aio core, over the same
servicer, health, reflection and error mapping. Each core has one function that creates its server
(options, interceptors, the bound port), so that whatever wraps the server (credentials, more
interceptors) goes in one place per core.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto import inference_pb2_grpc
from tensorgate.server.health import LOOP_THREAD_NAME, Health
from tensorgate.server.interceptors import AsyncErrorMappingInterceptor, ErrorMappingInterceptor
from tensorgate.server.servicer import AsyncInferenceServicer, InferenceServicer

log = logging.getLogger(__name__)

#: Calls that reach the server faster than handler threads take them wait in gRPC's core. Its default
#: bounds (1000, hard 3000) CANCEL the calls beyond; a server under overload should answer them late
#: or with RESOURCE_EXHAUSTED (maximum_concurrent_rpcs), never cancel them silently.
MAX_PENDING_REQUESTS = 100_000
SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
#: how long a thread waits for the event loop to start or stop the aio server
_LOOP_CALL_TIMEOUT_S = 30.0


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


@dataclass(frozen=True)
class Listening:
    """Where and how a worker listens: the address, TLS credentials (plaintext when None), and
    whether reflection is offered."""

    address: str
    credentials: grpc.ServerCredentials | None = None
    reflection: bool = True


def bind(server: grpc.Server | grpc.aio.Server, listening: Listening) -> int:
    """Adds the listening port (both cores); returns it, OSError when it cannot be bound."""
    if listening.credentials is None:
        port = server.add_insecure_port(listening.address)
    else:
        port = server.add_secure_port(listening.address, listening.credentials)
    if port == 0:
        raise OSError(f"cannot bind {listening.address}")
    return port


def _add_services(
    server: grpc.Server | grpc.aio.Server, servicer: Any, health: Health, listening: Listening
) -> int:
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if listening.reflection:
        reflection.enable_server_reflection(SERVICE_NAMES, server)
    return bind(server, listening)


def create_thread_server(
    servicer: InferenceServicer,
    health: Health,
    listening: Listening,
    *,
    threads: int,
    max_concurrent_rpcs: int,
    max_message_bytes: int,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> tuple[grpc.Server, int]:
    """grpcio's thread-pool server: one handler thread per call in progress. ``interceptors`` (the
    token check) run outside the error mapping."""
    server = grpc.server(
        ThreadPoolExecutor(threads, thread_name_prefix="grpc-handler"),
        interceptors=[*interceptors, ErrorMappingInterceptor()],
        options=server_options(max_message_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    return server, _add_services(server, servicer, health, listening)


def create_aio_server(
    servicer: InferenceServicer,
    health: Health,
    listening: Listening,
    *,
    max_concurrent_rpcs: int,
    max_message_bytes: int,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """The grpc.aio server (call it on its event loop): every call is a coroutine on that loop."""
    server = grpc.aio.server(
        interceptors=[*interceptors, AsyncErrorMappingInterceptor()],
        options=server_options(max_message_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    return server, _add_services(server, AsyncInferenceServicer(servicer), health, listening)


class ThreadCore:
    """The thread-pool core: start, stop(grace), wait, from any thread."""

    def __init__(self, create: Callable[[], tuple[grpc.Server, int]]) -> None:
        self._server, self.port = create()

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()


class EventLoop:
    """The worker's one event loop, on a thread of its own, for the grpc.aio core."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=LOOP_THREAD_NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Runs a coroutine on the loop and waits for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_LOOP_CALL_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


class AioCore:
    """The grpc.aio core: its server lives on ``events``; start, stop(grace), wait from any thread."""

    def __init__(
        self,
        events: EventLoop,
        create: Callable[[], tuple[grpc.aio.Server, int]],
    ) -> None:
        self._events = events

        async def created() -> tuple[grpc.aio.Server, int]:
            return create()

        self._server, self.port = events.call(created(), _LOOP_CALL_TIMEOUT_S)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._events.call(self._server.start(), _LOOP_CALL_TIMEOUT_S)

    def stop(self, grace: float) -> None:
        self._events.call(self._server.stop(grace), grace + _LOOP_CALL_TIMEOUT_S)
        self._stopped.set()
        self._events.close()

    def wait(self) -> None:
        self._stopped.wait()
