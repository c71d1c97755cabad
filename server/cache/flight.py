"""Single flight: concurrent lookups of one key share one computation."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from tensorgate.server.cache.codec import Outputs


class SingleFlight:
    """The first caller of :meth:`join` for a key leads, and must end the flight with :meth:`succeed`
    or :meth:`fail`; later callers get the same future and wait on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[bytes, Future[Outputs]] = {}

    def join(self, key: bytes) -> tuple[Future[Outputs], bool]:
        """The flight of ``key``, and whether this caller leads it."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = Future()
            self._flights[key] = flight
            return flight, True

    def succeed(self, key: bytes, outputs: Outputs) -> None:
        self._end(key).set_result(outputs)

    def fail(self, key: bytes, error: BaseException) -> None:
        self._end(key).set_exception(error)

    def _end(self, key: bytes) -> Future[Outputs]:
        with self._lock:
            return self._flights.pop(key)
