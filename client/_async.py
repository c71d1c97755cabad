"""The asyncio client (grpc.aio): one caller can keep hundreds of requests in flight."""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from tensorgate.client._channel import open_aio_channel
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
Inputs = Mapping[str, np.ndarray]


class AsyncClient:
    """The asyncio twin of :class:`tensorgate.client.Client` (same ``tls``, ``token``, ``headers``;
    ``channel`` is a ``grpc.aio.Channel``); use ``async with``."""

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
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._timeout = timeout
        self._metadata = base_metadata(metadata, token)
        self._owns_channel = channel is None
        self._channel = channel or open_aio_channel(
            target, options or ChannelOptions(), retry or RetryPolicy(), tls
        )
        self._stub = GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        call: Callable[..., Awaitable[T]],
        request: object,
        timeout: float | None,
        model: str | None = None,
        headers: Headers | None = None,
    ) -> T:
        """One deadline for the call; gRPC's retry policy (the channel's) retries within it."""
        with client_span(method, model, with_headers(self._metadata, headers)) as metadata:
            try:
                return await call(
                    request,
                    timeout=self._timeout if timeout is None else timeout,
                    metadata=metadata,
                )
            except grpc.RpcError as error:
                raise InferenceServerError.from_rpc_error(error) from None

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        parameters: Mapping[str, ParameterValue] | None = None,
        headers: Headers | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs ``model`` on ``inputs``; returns the requested outputs (all when None) by name."""
        return (
            await self.infer_result(
                model, inputs, outputs, version, timeout, parameters=parameters, headers=headers
            )
        ).outputs

    async def infer_result(
        self,
        model: str,
        inputs: Inputs,
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
        response = await self._call(
            "ModelInfer", self._stub.ModelInfer, request, timeout, model, headers
        )
        return InferResult.from_response(response)

    async def stream_infer(
        self,
        model: str,
        requests: AsyncIterable[Inputs] | Iterable[Inputs],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> AsyncIterator[InferResult]:
        """One ModelStreamInfer stream: sends every input mapping, yields results as they complete.

        The server pipelines a stream, so results may come out of order; each carries its request's
        id (the index of its inputs, as a string).
        """
        wanted = tuple(outputs or ())

        async def messages() -> AsyncIterator[pb.ModelInferRequest]:
            index = 0
            if isinstance(requests, AsyncIterable):
                async for inputs in requests:
                    yield build_infer_request(model, inputs, wanted, version, str(index))
                    index += 1
            else:
                for inputs in requests:
                    yield build_infer_request(model, inputs, wanted, version, str(index))
                    index += 1

        deadline = self._timeout if timeout is None else timeout
        base = with_headers(self._metadata, headers)
        with client_span("ModelStreamInfer", model, base) as metadata:
            call: Any = self._stub.ModelStreamInfer(messages(), timeout=deadline, metadata=metadata)
            try:
                async for message in call:
                    if message.error_message:
                        yield InferResult(id=message.infer_response.id, error=message.error_message)
                    else:
                        yield InferResult.from_response(message.infer_response)
            except grpc.RpcError as error:
                raise InferenceServerError.from_rpc_error(error) from None
            finally:
                call.cancel()

    # -- server
    async def live(self, timeout: float | None = None, *, headers: Headers | None = None) -> bool:
        request = pb.ServerLiveRequest()
        response = await self._call(
            "ServerLive", self._stub.ServerLive, request, timeout, None, headers
        )
        return response.live

    async def ready(self, timeout: float | None = None, *, headers: Headers | None = None) -> bool:
        request = pb.ServerReadyRequest()
        response = await self._call(
            "ServerReady", self._stub.ServerReady, request, timeout, None, headers
        )
        return response.ready

    async def server_metadata(
        self, timeout: float | None = None, *, headers: Headers | None = None
    ) -> ServerMetadata:
        request = pb.ServerMetadataRequest()
        response = await self._call(
            "ServerMetadata", self._stub.ServerMetadata, request, timeout, None, headers
        )
        return ServerMetadata.from_response(response)

    # -- models
    async def model_ready(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        response = await self._call(
            "ModelReady", self._stub.ModelReady, request, timeout, model, headers
        )
        return response.ready

    async def model_metadata(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> ModelMetadata:
        """The model's inputs and outputs (name, datatype, shape with -1 for variable)."""
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        response = await self._call(
            "ModelMetadata", self._stub.ModelMetadata, request, timeout, model, headers
        )
        return ModelMetadata.from_response(response)

    #: The name this client had first; kept for existing callers.
    metadata = model_metadata

    async def model_config(
        self,
        model: str,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> dict[str, Any]:
        """The model's configuration (Triton's ModelConfig) as a dict with the proto's field names."""
        request = pb.ModelConfigRequest(name=model, version=version or "")
        response = await self._call(
            "ModelConfig", self._stub.ModelConfig, request, timeout, model, headers
        )
        return message_to_dict(response.config)

    async def model_statistics(
        self,
        model: str | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        headers: Headers | None = None,
    ) -> list[dict[str, Any]]:
        """Inference statistics of ``model`` (None: of every model), one dict per model."""
        request = pb.ModelStatisticsRequest(name=model or "", version=version or "")
        response = await self._call(
            "ModelStatistics", self._stub.ModelStatistics, request, timeout, model, headers
        )
        return [message_to_dict(stats) for stats in response.model_stats]

    # -- repository (the admin role, when the server has tokens)
    async def repository_index(
        self, ready: bool = False, timeout: float | None = None, *, headers: Headers | None = None
    ) -> list[ModelState]:
        """Every model of the server's repository with its state (``ready``: the ready ones only)."""
        request = pb.RepositoryIndexRequest(ready=ready)
        response = await self._call(
            "RepositoryIndex", self._stub.RepositoryIndex, request, timeout, None, headers
        )
        return [ModelState(m.name, m.version, m.state, m.reason) for m in response.models]

    async def models(
        self, timeout: float | None = None, *, headers: Headers | None = None
    ) -> list[ModelState]:
        """Every model of the server's repository, with its state."""
        return await self.repository_index(timeout=timeout, headers=headers)

    async def load(
        self, model: str, timeout: float | None = None, *, headers: Headers | None = None
    ) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        await self._call(
            "RepositoryModelLoad", self._stub.RepositoryModelLoad, request, timeout, model, headers
        )

    async def unload(
        self, model: str, timeout: float | None = None, *, headers: Headers | None = None
    ) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call(
            "RepositoryModelUnload",
            self._stub.RepositoryModelUnload,
            request,
            timeout,
            model,
            headers,
        )
