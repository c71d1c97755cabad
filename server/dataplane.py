"""The transport-neutral data plane: one inference from decoded inputs to output arrays.

Written once for both gRPC cores: :meth:`DataPlane.infer` is a generator of the waits it needs
(see ``steps.py``), driven by a blocking thread (grpcio's pool) or by the event loop (grpc.aio).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from tensorgate.codec.messages import ParameterValue
from tensorgate.server.cache import Outcome, ResponseCache, shared
from tensorgate.server.faults import FaultInjector
from tensorgate.server.models import ModelManager, ServedModel
from tensorgate.server.steps import Await, Sleep, Steps
from tensorgate.server.tracing import Tracing
from tensorgate.server.validation import cache_parameter, timeout_seconds, validate_request

Outputs = dict[str, np.ndarray]


@dataclass(slots=True)
class InferRequest:
    model: str
    version: str
    id: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    #: time.monotonic() by which the caller needs the answer (gRPC deadline or OIP `timeout`)
    deadline: float | None = None


@dataclass(slots=True)
class InferResponse:
    model: str
    version: str
    id: str
    outputs: dict[str, np.ndarray]
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


def request_deadline(
    parameters: dict[str, ParameterValue], transport_deadline: float | None
) -> float | None:
    """The earlier of the transport's deadline and the OIP ``timeout`` parameter (µs)."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return transport_deadline
    own = time.monotonic() + timeout_seconds(timeout)
    return own if transport_deadline is None else min(own, transport_deadline)


class DataPlane:
    """Validates, caches, batches and runs requests; the gRPC servicers are thin layers over it."""

    def __init__(
        self,
        models: ModelManager,
        faults: FaultInjector | None = None,
        cache: ResponseCache | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.models = models
        self._faults = faults or FaultInjector()
        self._cache = cache
        self._tracing = tracing

    def model(self, name: str, version: str) -> ServedModel:
        """The ready model a request is for: looked up before its tensors are decoded."""
        return self.models.get(name, version)

    def infer(
        self,
        model: ServedModel,
        request: InferRequest,
        trace_context: object | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Steps[InferResponse]:
        """Validate, then the cache or the batcher; ``loop``: the caller awaits on that loop."""
        started = time.monotonic()
        ok = False
        try:
            validate_request(
                model.name,
                model.inputs,
                model.outputs,
                request.inputs,
                request.outputs,
                model.config.max_batch_size if model.batchable else 0,
            )
            if self._faults.enabled:
                if self._faults.latency_s > 0:
                    yield Sleep(self._faults.latency_s)
                self._faults.maybe_fail()
            parameters: dict[str, ParameterValue] = {}
            if self._uses_cache(model, request):
                outputs, parameters["cache"] = yield from self._cached(
                    model, request, trace_context, loop
                )
            else:
                outputs = yield from self._run(model, request, trace_context, loop)
            ok = True
        finally:
            model.stats.on_request(ok, time.monotonic() - started)
        return InferResponse(request.model, model.version, request.id, outputs, parameters)

    def _uses_cache(self, model: ServedModel, request: InferRequest) -> bool:
        wanted = cache_parameter(request.parameters)
        return self._cache is not None and model.config.cache_enabled and wanted

    def _cached(
        self,
        model: ServedModel,
        request: InferRequest,
        trace_context: object | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Steps[tuple[Outputs, str]]:
        """The answer from the cache, or computed once and stored; with "hit" or "miss"."""
        cache = self._cache
        assert cache is not None
        key = cache.key(
            model=model.name,
            model_digest=model.digest,
            inputs=request.inputs,
            outputs=request.outputs,
            parameters=request.parameters,
        )
        while True:
            lookup = cache.begin(model.name, key)
            if lookup.outputs is not None:
                outputs, outcome = lookup.outputs, lookup.outcome
                break
            if lookup.flight is None:  # a miss that this request leads
                try:
                    outputs = yield from self._run(model, request, trace_context, loop)
                except BaseException as error:
                    cache.abandon(key, error)
                    raise
                cache.fill(key, outputs, model.config.cache.ttl_s)
                outcome = Outcome.MISS
                break
            flight = yield Await(
                lookup.flight,
                request.deadline,
                "deadline passed while waiting for an identical request's result",
            )
            found = shared(flight)
            if found is not None:
                cache.on_shared(model.name, lookup)
                outputs, outcome = found, Outcome.SHARED_HIT
                break  # else the leader's own request failed: try again
        model.stats.on_cache(outcome.hit, time.monotonic() - lookup.started)
        if self._tracing is not None and self._tracing.enabled:
            self._tracing.record_cache_lookup(lookup.started, outcome.value)
        return outputs, outcome.parameter

    @staticmethod
    def _run(
        model: ServedModel,
        request: InferRequest,
        trace_context: object | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> Steps[Outputs]:
        future = model.submit(
            request.inputs, request.outputs, request.deadline, trace_context, loop
        )
        try:
            outputs: Outputs = yield Await(
                future,
                request.deadline,
                f"model '{model.name}': the request's deadline passed before its result was ready",
            )
        except BaseException:
            future.cancel()  # whatever ends the wait, queued work is not left to run for nobody
            raise
        return outputs
