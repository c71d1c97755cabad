"""The port layout of a local stack: Envoy's front door and admin, each worker's gRPC and metrics."""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class PortLayout:
    """Worker i serves gRPC on ``port + 1 + i`` and metrics on ``metrics_port + i``.

    ``metrics_port`` 0 turns the workers' metrics off.
    """

    port: int
    admin_port: int
    metrics_port: int
    workers: int

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("at least one worker is needed")
        for name, value in (("port", self.port), ("admin port", self.admin_port)):
            if not 1 <= value <= 65535:
                raise ValueError(f"the {name} must be within 1..65535, not {value}")
        highest = max(
            self.worker_port(self.workers - 1), self.worker_metrics_port(self.workers - 1)
        )
        if self.metrics_port < 0 or highest > 65535:
            raise ValueError(f"{self.workers} workers do not fit below port 65536 with this layout")
        ports = self.all_ports()
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"ports overlap: front door {self.port}, workers {self.worker_ports()}, "
                f"admin {self.admin_port}, metrics {self.metrics_ports()}"
            )

    def worker_port(self, index: int) -> int:
        return self.port + 1 + index

    def worker_metrics_port(self, index: int) -> int:
        return self.metrics_port + index if self.metrics_port else 0

    def worker_ports(self) -> list[int]:
        return [self.worker_port(i) for i in range(self.workers)]

    def metrics_ports(self) -> list[int]:
        return (
            [self.worker_metrics_port(i) for i in range(self.workers)] if self.metrics_port else []
        )

    def all_ports(self) -> list[int]:
        return [self.port, self.admin_port, *self.worker_ports(), *self.metrics_ports()]


def busy_ports(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports of ``ports`` that something already listens on (a hint for a clear error at start)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(port)
    return busy
