"""OpenTelemetry traces of the worker, configured by the standard OTEL_* environment variables.

Tracing is on when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and not switched off (OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none).
OTEL_EXPORTER_OTLP_PROTOCOL picks grpc (the default) or http/protobuf. When off, handlers skip every
span call: the cost is one attribute check per request.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind

from tensorgate.server.batching import BatchEvent

log = logging.getLogger(__name__)

TRACER_NAME = "tensorgate.server"


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """The worker's tracer; ``enabled`` is False unless OTEL_* configure an exporter."""

    def __init__(
        self, service_name: str = "tensorgate-worker", environ: Mapping[str, str] = os.environ
    ) -> None:
        self.enabled = tracing_requested(environ)
        self._provider: Any = None
        if not self.enabled:
            self.tracer = trace.NoOpTracer()
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
        )
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        name = environ.get("OTEL_SERVICE_NAME", service_name)
        self._provider = TracerProvider(resource=Resource.create({"service.name": name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self._provider.get_tracer(TRACER_NAME)
        log.info("tracing on: OTLP over %s as service %s", protocol, name)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    @contextmanager
    def server_span(
        self, method: str, metadata: Sequence[tuple[str, Any]], model: str
    ) -> Iterator[Any]:
        """The worker's span of one call, continuing the caller's W3C trace context."""
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = propagate.extract(carrier)
        with self.tracer.start_as_current_span(
            f"inference.GRPCInferenceService/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": method, "tensorgate.model": model},
        ) as span:
            yield span

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Any]:
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    def current_context(self) -> object | None:
        """The current span's context, handed to the batcher so the batch span can link to it."""
        span_context = trace.get_current_span().get_span_context()
        return span_context if span_context.is_valid else None

    def record_cache_lookup(self, started_monotonic: float, outcome: str) -> None:
        """A span for the cache lookup that just ended (on a miss it covers the model run too)."""
        elapsed_ns = int((time.monotonic() - started_monotonic) * 1e9)
        end_ns = time.time_ns()
        span = self.tracer.start_span(
            "cache lookup", start_time=end_ns - elapsed_ns, attributes={"tensorgate.cache": outcome}
        )
        span.end(end_time=end_ns)

    def record_batch(
        self,
        model: str,
        version: str,
        provider: str,
        event: BatchEvent,
    ) -> None:
        """After a run: a queue-wait span in each request's trace, and one batch-run span (in the
        first request's trace) linking to every request it served."""
        contexts = event.trace_contexts
        valid = [c for c in contexts if c is not None]
        if not valid:
            return
        now_ns = time.time_ns()
        compute_ns = int(event.compute_seconds * 1e9)
        run_start = now_ns - compute_ns
        for span_context, waited in zip(contexts, event.queue_seconds, strict=False):
            if span_context is None:
                continue
            parent = trace.set_span_in_context(NonRecordingSpan(span_context))  # type: ignore[arg-type]
            wait = self.tracer.start_span(
                "queue wait", context=parent, start_time=run_start - int(waited * 1e9)
            )
            wait.end(end_time=run_start)
        parent = trace.set_span_in_context(NonRecordingSpan(valid[0]))  # type: ignore[arg-type]
        run = self.tracer.start_span(
            "batch run",
            context=parent,
            start_time=run_start,
            links=[Link(c) for c in valid],  # type: ignore[arg-type]
            attributes={
                "tensorgate.model": model,
                "tensorgate.model_version": version,
                "tensorgate.batch_size": event.batch_size,
                "tensorgate.execution_provider": provider,
            },
        )
        run.end(end_time=now_ns)


def trace_id_of(span: Any) -> str | None:
    """Hex trace id of a sampled span, for exemplars."""
    span_context = span.get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return format(span_context.trace_id, "032x")


class BatchTracer:
    """The batcher's observer that turns each run into spans (only installed when tracing is on)."""

    def __init__(self, tracing: Tracing, model: str, version: str, provider: str) -> None:
        self._tracing = tracing
        self._labels = (model, version, provider)

    def on_batch(self, event: BatchEvent) -> None:
        model, version, provider = self._labels
        self._tracing.record_batch(model, version, provider, event)

    def on_reject(self, reason: str) -> None:
        """Rejected requests end their own server span with the error status."""
