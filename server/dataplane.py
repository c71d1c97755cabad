"""The transport-neutral data plane: one inference from decoded inputs to output arrays."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tensorgate.codec.messages import ParameterValue
from tensorgate.server.cache import ResponseCache
from tensorgate.server.errors import DeadlineExceededError, RequestCancelledError
from tensorgate.server.faults import FaultInjector
from tensorgate.server.models import ModelManager, ServedModel
from tensorgate.server.tracing import Tracing
from tensorgate.server.validation import cache_parameter, timeout_seconds, validate_request

#: registers a callback to run when the caller goes away (a cancelled RPC)
CancelHook = Callable[[Callable[[], None]], object]


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


class InferenceService:
    """Validates, caches, batches and runs requests; the gRPC servicer is a thin layer over it."""

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

    def infer(
        self,
        request: InferRequest,
        on_cancel: CancelHook | None = None,
        trace_context: object | None = None,
    ) -> InferResponse:
        model = self.models.get(request.model, request.version)
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
                self._faults.apply()
            parameters: dict[str, ParameterValue] = {}
            if self._uses_cache(model, request):
                outputs, parameters["cache"] = self._cached(
                    model, request, on_cancel, trace_context
                )
            else:
                outputs = self._run(model, request, on_cancel, trace_context)
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
        on_cancel: CancelHook | None,
        trace_context: object | None,
    ) -> tuple[dict[str, np.ndarray], str]:
        """The answer from the cache, or computed once and stored; with "hit" or "miss"."""
        assert self._cache is not None
        started = time.monotonic()
        key = self._cache.key(
            model=model.name,
            model_digest=model.digest,
            inputs=request.inputs,
            outputs=request.outputs,
            parameters=request.parameters,
        )
        outputs, outcome = self._cache.get_or_compute(
            model.name,
            key,
            lambda: self._run(model, request, on_cancel, trace_context),
            deadline=request.deadline,
            ttl_s=model.config.cache.ttl_s,
        )
        model.stats.on_cache(outcome.hit, time.monotonic() - started)
        if self._tracing is not None and self._tracing.enabled:
            self._tracing.record_cache_lookup(started, outcome.value)
        return outputs, outcome.parameter

    def _run(
        self,
        model: ServedModel,
        request: InferRequest,
        on_cancel: CancelHook | None,
        trace_context: object | None,
    ) -> dict[str, np.ndarray]:
        future = model.submit(request.inputs, request.outputs, request.deadline, trace_context)
        if on_cancel is not None:
            on_cancel(future.cancel)
        timeout = (
            None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        )
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceededError(
                f"model '{model.name}': the request's deadline passed before its result was ready"
            ) from None
        except concurrent.futures.CancelledError:
            raise RequestCancelledError(
                f"model '{model.name}': the request was cancelled"
            ) from None
        except BaseException:
            future.cancel()  # whatever ends the wait, queued work is not left to run for nobody
            raise
