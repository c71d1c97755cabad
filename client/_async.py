"""The asyncio client (grpc.aio): one caller can keep hundreds of requests in flight."""

from __future__ import annotations

import asyncio
import time
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

from tensorgate.client._errors import InferenceServerError
from tensorgate.client._options import ChannelOptions, RetryPolicy
from tensorgate.client._tracing import client_span
from tensorgate.client._types import InferResult, ModelMetadata, ModelState
from tensorgate.codec.messages import ParameterValue, build_infer_request
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub

T = TypeVar("T")
Inputs = Mapping[str, np.ndarray]


class AsyncClient:
    """The asyncio twin of :class:`tensorgate.client.Client`; use ``async with``."""

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
        self._channel = grpc.aio.insecure_channel(
            target, options=self._options.grpc_options(), compression=self._options.compression
        )
        self._stub = GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
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
                    return await call(request, timeout=remaining, metadata=metadata)
                except grpc.RpcError as error:
                    last_attempt = attempt + 1 >= self._retry.max_attempts
                    if last_attempt or not self._retry.retryable(error.code()):
                        raise InferenceServerError.from_rpc_error(error) from None
                    pause = min(self._retry.backoff(attempt), max(0.0, deadline - time.monotonic()))
                    await asyncio.sleep(pause)
        raise AssertionError("unreachable: the loop returns or raises")

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
        *,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs ``model`` on ``inputs``; returns the requested outputs (all when None) by name."""
        result = await self.infer_result(
            model, inputs, outputs, version, timeout, parameters=parameters
        )
        return result.outputs

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
    ) -> InferResult:
        request = build_infer_request(model, inputs, outputs, version, request_id, parameters)
        response = await self._call("ModelInfer", self._stub.ModelInfer, request, timeout, model)
        return InferResult.from_response(response)

    async def stream_infer(
        self,
        model: str,
        requests: AsyncIterable[Inputs] | Iterable[Inputs],
        outputs: Iterable[str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
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
        with client_span("ModelStreamInfer", model, self._metadata) as metadata:
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

    async def live(self, timeout: float | None = None) -> bool:
        response = await self._call(
            "ServerLive", self._stub.ServerLive, pb.ServerLiveRequest(), timeout
        )
        return response.live

    async def ready(self, timeout: float | None = None) -> bool:
        response = await self._call(
            "ServerReady", self._stub.ServerReady, pb.ServerReadyRequest(), timeout
        )
        return response.ready

    async def model_ready(
        self, model: str, version: str | None = None, timeout: float | None = None
    ) -> bool:
        request = pb.ModelReadyRequest(name=model, version=version or "")
        return (
            await self._call("ModelReady", self._stub.ModelReady, request, timeout, model)
        ).ready

    async def metadata(
        self, model: str, version: str | None = None, timeout: float | None = None
    ) -> ModelMetadata:
        request = pb.ModelMetadataRequest(name=model, version=version or "")
        response = await self._call(
            "ModelMetadata", self._stub.ModelMetadata, request, timeout, model
        )
        return ModelMetadata.from_response(response)

    async def models(self, timeout: float | None = None) -> list[ModelState]:
        response = await self._call(
            "RepositoryIndex", self._stub.RepositoryIndex, pb.RepositoryIndexRequest(), timeout
        )
        return [ModelState(m.name, m.version, m.state, m.reason) for m in response.models]

    async def load(self, model: str, timeout: float | None = None) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        await self._call(
            "RepositoryModelLoad", self._stub.RepositoryModelLoad, request, timeout, model
        )

    async def unload(self, model: str, timeout: float | None = None) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call(
            "RepositoryModelUnload", self._stub.RepositoryModelUnload, request, timeout, model
        )
