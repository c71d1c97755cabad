"""The standard grpc.health.v1 service: the server as "" and one service name per model."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Keeps the health statuses; once draining, every status stays NOT_SERVING."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self.servicer.set("", NOT_SERVING)

    def set_server(self, serving: bool) -> None:
        self.servicer.set("", SERVING if serving else NOT_SERVING)

    def set_model(self, name: str, serving: bool) -> None:
        self.servicer.set(name, SERVING if serving else NOT_SERVING)

    def drain(self) -> None:
        """NOT_SERVING everywhere, for good: balancers stop routing here."""
        self.servicer.enter_graceful_shutdown()
