"""The gRPC servicers of ``inference.GRPCInferenceService``: convert, delegate, nothing else.

:class:`InferenceServicer` serves grpcio's thread-pool core; :class:`AsyncInferenceServicer` serves
the ``grpc.aio`` core over the same methods and the same request path (:meth:`answer`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceServicer
from tensorgate.server.convert import (
    decode_infer_request,
    encode_infer_response,
    model_config,
    model_metadata,
    model_statistics,
    repository_index,
    transport_deadline,
)
from tensorgate.server.dataplane import DataPlane
from tensorgate.server.errors import TensorgateError
from tensorgate.server.metrics import Metrics
from tensorgate.server.steps import Steps, drive, drive_async
from tensorgate.server.streams import RequestSlots, serve_stream, serve_stream_async
from tensorgate.server.tracing import Tracing, trace_id_of
from tensorgate.server.version import SERVER_NAME, SERVER_VERSION

EXTENSIONS = ("model_repository", "model_configuration", "statistics", "binary_tensor_data")


class InferenceServicer(GRPCInferenceServiceServicer):
    """The thread-pool core's servicer; its control methods serve the aio core too."""

    def __init__(
        self,
        dataplane: DataPlane,
        is_ready: threading.Event,
        metrics: Metrics,
        tracing: Tracing,
        slots: RequestSlots,
        stream_executor: ThreadPoolExecutor,
    ) -> None:
        self._dataplane = dataplane
        self._models = dataplane.models
        self._metrics = metrics
        self._tracing = tracing
        self._ready = is_ready
        self.slots = slots
        self._stream_executor = stream_executor

    # -- health of the server and models
    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready.is_set())

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            self._models.get(request.name, request.version)
        except TensorgateError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    # -- model description
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        return model_metadata(self._models.get(request.name, request.version))

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return model_config(self._models.get(request.name, request.version))

    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self._models.get(request.name, request.version)]
        else:
            models = self._models.ready_models()
        return pb.ModelStatisticsResponse(model_stats=[model_statistics(m) for m in models])

    # -- repository
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        return repository_index(self._models.index(), request.ready)

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._models.request_load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._models.request_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        with self.slots.hold():
            return drive(
                self.answer(
                    request,
                    transport_deadline(context),
                    context.invocation_metadata(),
                    "ModelInfer",
                ),
                context.add_callback,
            )

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        return serve_stream(self, self._stream_executor, request_iterator, context)

    def answer(
        self,
        message: pb.ModelInferRequest,
        deadline: float | None,
        metadata: Sequence[Any],
        method: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Steps[pb.ModelInferResponse]:
        """One request, counted and timed, traced when tracing is on: the model is looked up
        before the tensors are decoded, so a request for a missing model costs no decoding."""
        with self._metrics.track_request(message.model_name, message.model_version) as record:
            try:
                if not self._tracing.enabled:
                    model = self._dataplane.model(message.model_name, message.model_version)
                    response = yield from self._dataplane.infer(
                        model, decode_infer_request(message, deadline), None, loop
                    )
                    record.version = response.version
                    return encode_infer_response(response)
                with self._tracing.server_span(method, metadata, message.model_name) as span:
                    record.trace_id = trace_id_of(span)
                    model = self._dataplane.model(message.model_name, message.model_version)
                    response = yield from self._dataplane.infer(
                        model,
                        decode_infer_request(message, deadline),
                        self._tracing.current_context(),
                        loop,
                    )
                    record.version = response.version
                    with self._tracing.span("encode", outputs=len(response.outputs)):
                        return encode_infer_response(response)
            except TensorgateError:
                record.model, record.version = self._labels_of_failed(message)
                raise

    def _labels_of_failed(self, message: pb.ModelInferRequest) -> tuple[str, str]:
        """Metrics labels of a failed request: the version it was meant for, bounded by what this
        server knows (callers choose names and versions; each would make new series)."""
        try:
            version = self._models.get(message.model_name, message.model_version).version
        except TensorgateError:
            version = message.model_version
        return self._models.metric_labels(message.model_name, version)


class AsyncInferenceServicer(GRPCInferenceServiceServicer):
    """The grpc.aio core's servicer: inference awaits the batcher on the loop (no thread per
    call); the control methods are the thread servicer's, called on the loop (they are quick),
    except model loading, which runs in a thread so that the loop keeps serving."""

    def __init__(self, servicer: InferenceServicer) -> None:
        self._servicer = servicer

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        servicer = self._servicer
        with servicer.slots.hold():
            return await drive_async(
                servicer.answer(
                    request,
                    transport_deadline(context),
                    context.invocation_metadata() or (),
                    "ModelInfer",
                    asyncio.get_running_loop(),
                )
            )

    async def ModelStreamInfer(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for response in serve_stream_async(self._servicer, request_iterator, context):
            yield response

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        return await asyncio.to_thread(self._servicer.RepositoryModelLoad, request, context)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        return await asyncio.to_thread(self._servicer.RepositoryModelUnload, request, context)


def _on_the_loop(name: str) -> Any:
    async def call(self: AsyncInferenceServicer, request: Any, context: Any) -> Any:
        return getattr(self._servicer, name)(request, context)

    call.__name__ = call.__qualname__ = name
    return call


for _name in (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
):
    setattr(AsyncInferenceServicer, _name, _on_the_loop(_name))
