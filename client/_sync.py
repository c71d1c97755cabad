"""The blocking client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
import numpy as np

from tensorgate.client._errors import InferenceServerError
from tensorgate.client._options import ChannelOptions, RetryPolicy
from tensorgate.client._tracing import client_span
from tensorgate.client._types import InferResult, ModelMetadata, ModelState
from tensorgate.codec.messages import ParameterValue, build_infer_request
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub

T = TypeVar("T")


class Client:
    """A blocking OIP v2 gRPC client. Every call has a deadline; UNAVAILABLE is retried with backoff.

    >>> with Client("127.0.0.1:8000") as client:
    ...     outputs = client.infer("digits", {"pixels": pixels})
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        options: ChannelOptions | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._options = options or ChannelOptions()
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._metadata = tuple(metadata)
        self._channel = grpc.insecure_channel(
            target, options=self._options.grpc_options(), compression=self._options.compression
        )
        self._stub = GRPCInferenceServiceStub(self._channel)

    # -- lifecycle
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the call loop
    def _call(
        self,
        method: str,
        call: Callable[..., T],
        request: object,
        timeout: float | None,
        model: str | None = None,
    ) -> T:
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        with client_span(method, model, self._metadata) as metadata:
            for attempt in range(self._retry.max_attempts):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InferenceServerError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: deadline exceeded"
                    )
                try:
                    return call(request, timeout=remaining, metadata=metadata)
                except grpc.RpcError as error:
                    last_attempt = attempt + 1 >= self._retry.max_attempts
                    if last_attempt or not self._retry.retryable(error.code()):
                        raise InferenceServerError.from_rpc_error(error) from None
                    pause = min(self._retry.backoff(attempt), max(0.0, deadline - time.monotonic()))
                    time.sleep(pause)
        raise AssertionError("unreachable: the loop returns or raises")

    # -- inference
    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs ``model`` on ``inputs``; returns the requested outputs (all when None) by name."""
        return self.infer_result(
            model, inputs, outputs, version, timeout, parameters=parameters
        ).outputs

    def infer_result(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        request_id: str = "",
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> InferResult:
        """Like :meth:`infer`, with the response's parameters (e.g. ``cache``) and id."""
        request = build_infer_request(model, inputs, outputs, version, request_id, parameters)
        response = self._call("ModelInfer", self._stub.ModelInfer, request, timeout, model)
        return InferResult.from_response(response)

    def stream_infer(
        self,
        model: str,
        requests: Iterable[Mapping[str, np.ndarray]],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[InferResult]:
        """Sends every input mapping on one ModelStreamInfer stream; yields results as they come.

        Results may arrive out of order: each carries the id of its request (its index, as a string).
        """
        wanted = tuple(outputs or ())
        stop = threading.Event()

        def messages() -> Iterator[pb.ModelInferRequest]:
            for index, inputs in enumerate(requests):
                if stop.is_set():
                    return
                yield build_infer_request(model, inputs, wanted, version, str(index))

        deadline = self._timeout if timeout is None else timeout
        with client_span("ModelStreamInfer", model, self._metadata) as metadata:
            call = self._stub.ModelStreamInfer(messages(), timeout=deadline, metadata=metadata)
            try:
                for message in call:
                    if message.error_message:
                        yield InferResult(id=message.infer_response.id, error=message.error_message)
                    else:
                        yield InferResult.from_response(message.infer_response)
            except grpc.RpcError as error:
                raise InferenceServerError.from_rpc_error(error) from None
            finally:
                stop.set()
                call.cancel()

    # -- server and models
    def live(self, timeout: float | None = None) -> bool:
        return self._call("ServerLive", self._stub.ServerLive, pb.ServerLiveRequest(), timeout).live

    def ready(self, timeout: float | None = None) -> bool:
        return self._call(
            "ServerReady", self._stub.ServerReady, pb.ServerReadyRequest(), timeout
        ).ready

    def model_ready(
        self, model: str, version: str | None = None, timeout: float | None = None
    ) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return self._call("ModelReady", self._stub.ModelReady, request, timeout, model).ready

    def metadata(
        self, model: str, version: str | None = None, timeout: float | None = None
    ) -> ModelMetadata:
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        response = self._call("ModelMetadata", self._stub.ModelMetadata, request, timeout, model)
        return ModelMetadata.from_response(response)

    def models(self, timeout: float | None = None) -> list[ModelState]:
        """Every model of the server's repository, with its state."""
        response = self._call(
            "RepositoryIndex", self._stub.RepositoryIndex, pb.RepositoryIndexRequest(), timeout
        )
        return [ModelState(m.name, m.version, m.state, m.reason) for m in response.models]

    def load(self, model: str, timeout: float | None = None) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        self._call("RepositoryModelLoad", self._stub.RepositoryModelLoad, request, timeout, model)

    def unload(self, model: str, timeout: float | None = None) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        self._call(
            "RepositoryModelUnload", self._stub.RepositoryModelUnload, request, timeout, model
        )
