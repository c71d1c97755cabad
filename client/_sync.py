"""The blocking client."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np

from tensorgate.client._channel import open_channel
from tensorgate.client._errors import InferenceServerError
from tensorgate.client._options import ChannelOptions, RetryPolicy
from tensorgate.client._security import Headers, TlsConfig, base_metadata, with_headers
from tensorgate.client._tracing import client_span
from tensorgate.client._types import (
    InferResult,
    ModelMetadata,
    ModelState,
    ServerMetadata,
    message_to_dict,
)
from tensorgate.codec.messages import ParameterValue, build_infer_request
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub

T = TypeVar("T")


class Client:
    """A blocking OIP v2 gRPC client. Every call has one deadline; gRPC retries UNAVAILABLE within it.

    >>> with Client("127.0.0.1:8000") as client:
    ...     outputs = client.infer("digits", {"pixels": pixels})

    ``tls`` turns TLS on (``TlsConfig(root_certificates=..., certificate_chain=..., private_key=...)``
    for a private CA and mTLS); ``token`` is sent as ``authorization: Bearer <token>``; every method
    takes ``headers=`` for one call's extra metadata. ``channel`` is a ``grpc.Channel`` of your own
    (then ``target``, ``tls``, ``options`` and ``retry`` are not used, and ``close()`` leaves it open).
    """

    def __init__(
        self,
        target: str = "127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        options: ChannelOptions | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        tls: TlsConfig | None = None,
        token: str | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._timeout = timeout
        self._metadata = base_metadata(metadata, token)
        self._owns_channel = channel is None
        self._channel = channel or open_channel(
            target, options or ChannelOptions(), retry or RetryPolicy(), tls
        )
        self._stub = GRPCInferenceServiceStub(self._channel)

    # -- lifecycle
    def close(self) -> None:
        if self._owns_channel:
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

    # -- one call
    def _call(
        self,
        method: str,
        call: Callable[..., T],
        request: object,
        timeout: float | None,
        model: str | None = None,
        headers: Headers | None = None,
    ) -> T:
        """One deadline for the call; gRPC's retry policy (the channel's) retries within it."""
        with client_span(method, model, with_headers(self._metadata, headers)) as metadata:
            try:
                return call(
                    request,
                    timeout=self._timeout if timeout is None else timeout,
                    metadata=metadata,
                )
            except grpc.RpcError as error:
                raise InferenceServerError.from_rpc_error(error) from None

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
        headers: Headers | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs ``model`` on ``inputs``; returns the requested outputs (all when None) by name."""
        return self.infer_result(
            model, inputs, outputs, version, timeout, parameters=parameters, headers=headers
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
        headers: Headers | None = None,
    ) -> InferResult:
        """Like :meth:`infer`, with the response's parameters (e.g. ``cache``) and id."""
        request = build_infer_request(model, inputs, outputs, version, request_id, parameters)
        response = self._call("ModelInfer", self._stub.ModelInfer, request, timeout, model, headers)
        return InferResult.from_response(response)

    def stream_infer(
        self,
        model: str,
        requests: Iterable[Mapping[str, np.ndarray]],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
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
        base = with_headers(self._metadata, headers)
        with client_span("ModelStreamInfer", model, base) as metadata:
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

    # -- server
    def live(self, timeout: float | None = None, *, headers: Headers | None = None) -> bool:
        request = pb.ServerLiveRequest()
        return self._call("ServerLive", self._stub.ServerLive, request, timeout, None, headers).live

    def ready(self, timeout: float | None = None, *, headers: Headers | None = None) -> bool:
        request = pb.ServerReadyRequest()
        response = self._call(
            "ServerReady", self._stub.ServerReady, request, timeout, None, headers
        )
        return response.ready

    def server_metadata(
        self, timeout: float | None = None, *, headers: Headers | None = None
    ) -> ServerMetadata:
        request = pb.ServerMetadataRequest()
        response = self._call(
            "ServerMetadata", self._stub.ServerMetadata, request, timeout, None, headers
        )
        return ServerMetadata.from_response(response)

    # -- models
    def model_ready(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return self._call(
            "ModelReady", self._stub.ModelReady, request, timeout, model, headers
        ).ready

    def model_metadata(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> ModelMetadata:
        """The model's inputs and outputs (name, datatype, shape with -1 for variable)."""
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        response = self._call(
            "ModelMetadata", self._stub.ModelMetadata, request, timeout, model, headers
        )
        return ModelMetadata.from_response(response)

    #: The name this client had first; kept for existing callers.
    metadata = model_metadata

    def model_config(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> dict[str, Any]:
        """The model's configuration (Triton's ModelConfig) as a dict with the proto's field names."""
        request = pb.ModelConfigRequest(name=model, version=version or "")
        response = self._call(
            "ModelConfig", self._stub.ModelConfig, request, timeout, model, headers
        )
        return message_to_dict(response.config)

    def model_statistics(
        self,
        model: str | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> list[dict[str, Any]]:
        """Inference statistics of ``model`` (None: of every model), one dict per model."""
        request = pb.ModelStatisticsRequest(name=model or "", version=version or "")
        response = self._call(
            "ModelStatistics", self._stub.ModelStatistics, request, timeout, model, headers
        )
        return [message_to_dict(stats) for stats in response.model_stats]

    # -- repository (the admin role, when the server has tokens)
    def repository_index(
        self, ready: bool = False, timeout: float | None = None, *, headers: Headers | None = None
    ) -> list[ModelState]:
        """Every model of the server's repository with its state (``ready``: the ready ones only)."""
        request = pb.RepositoryIndexRequest(ready=ready)
        response = self._call(
            "RepositoryIndex", self._stub.RepositoryIndex, request, timeout, None, headers
        )
        return [ModelState(m.name, m.version, m.state, m.reason) for m in response.models]

    def models(
        self, timeout: float | None = None, *, headers: Headers | None = None
    ) -> list[ModelState]:
        """Every model of the server's repository, with its state."""
        return self.repository_index(timeout=timeout, headers=headers)

    def load(
        self, model: str, timeout: float | None = None, *, headers: Headers | None = None
    ) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        self._call(
            "RepositoryModelLoad", self._stub.RepositoryModelLoad, request, timeout, model, headers
        )

    def unload(
        self, model: str, timeout: float | None = None, *, headers: Headers | None = None
    ) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        self._call(
            "RepositoryModelUnload",
            self._stub.RepositoryModelUnload,
            request,
            timeout,
            model,
            headers,
        )
