"""The standard grpc.health.v1 service: the server as "" and one service name per model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: how long a thread waits for the event loop to apply a status
_SET_TIMEOUT_S = 5.0


class Health:
    """Keeps the health statuses; once draining, every status stays NOT_SERVING.

    With ``loop`` (the grpc.aio core) the servicer is grpc's asyncio one, and statuses set from
    other threads are applied on that loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self.servicer: Any = (
            health.aio.HealthServicer()
            if loop is not None
            else health.HealthServicer(experimental_non_blocking=True)
        )
        self._set("", NOT_SERVING)

    def set_server(self, serving: bool) -> None:
        self._set("", SERVING if serving else NOT_SERVING)

    def set_model(self, name: str, serving: bool) -> None:
        self._set(name, SERVING if serving else NOT_SERVING)

    def drain(self) -> None:
        """NOT_SERVING everywhere, for good: balancers stop routing here."""
        if self._loop is None:
            self.servicer.enter_graceful_shutdown()
        else:
            self._on_loop(self.servicer.enter_graceful_shutdown())

    def _set(self, service: str, status: int) -> None:
        if self._loop is None:
            self.servicer.set(service, status)
        else:
            self._on_loop(self.servicer.set(service, status))

    def _on_loop(self, call: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(call, self._loop)
        if threading.current_thread().name != LOOP_THREAD_NAME:
            done.result(_SET_TIMEOUT_S)


#: the name of the thread that runs the grpc.aio core's event loop
LOOP_THREAD_NAME = "grpc-aio-loop"
