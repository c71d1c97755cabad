"""Optional OpenTelemetry support: a client span per call, and W3C ``traceparent`` in its metadata.

OpenTelemetry is not a dependency of the light client; without it (or with no tracer provider set up),
calls carry no trace context and this costs next to nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

Metadata = tuple[tuple[str, str], ...]

try:
    from opentelemetry import propagate, trace
except ImportError:  # the light client without OpenTelemetry
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]


@contextlib.contextmanager
def client_span(
    method: str, model: str | None, base: Sequence[tuple[str, str]]
) -> Iterator[Metadata]:
    """Opens a client span for one call and yields the metadata to send, with the trace context."""
    if trace is None or propagate is None:
        yield tuple(base)
        return
    tracer = trace.get_tracer("tensorgate.client")
    attributes = {"rpc.system": "grpc", "rpc.method": method}
    if model:
        attributes["tensorgate.model"] = model
    with tracer.start_as_current_span(
        f"inference.GRPCInferenceService/{method}",
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield tuple(base) + tuple(carrier.items())
