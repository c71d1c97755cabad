"""The gRPC servicer of ``inference.GRPCInferenceService``: protobuf in, protobuf out, over the service."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceServicer
from tensorgate.server.convert import (
    decode_infer_request,
    encode_infer_response,
    transport_deadline,
)
from tensorgate.server.dataplane import CancelHook, InferenceService
from tensorgate.server.errors import ModelNotFoundError, TensorgateError
from tensorgate.server.interceptors import unexpected
from tensorgate.server.metrics import Metrics
from tensorgate.server.models import ModelState, ServedModel
from tensorgate.server.tracing import Tracing, trace_id_of
from tensorgate.server.version import SERVER_NAME, SERVER_VERSION

log = logging.getLogger(__name__)

EXTENSIONS = ("model_repository", "model_configuration", "statistics", "binary_tensor_data")
#: the metrics label of requests for models that do not exist
UNKNOWN_MODEL_LABEL = "_unknown"
#: how many requests of one stream may be in flight at once; the reader waits beyond it
STREAM_WINDOW = 512
_STREAM_END = object()

_CONFIG_DATATYPES = {
    name: pb.DataType.Value(f"TYPE_{'STRING' if name == 'BYTES' else name}")
    for name in (
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    )
}


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(
        self,
        service: InferenceService,
        stream_executor: ThreadPoolExecutor,
        is_ready: threading.Event,
        metrics: Metrics,
        tracing: Tracing,
    ) -> None:
        self._service = service
        self._metrics = metrics
        self._tracing = tracing
        self._models = service.models
        self._stream_executor = stream_executor
        self._ready = is_ready

    # -- health of the server and models
    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready.is_set())

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._models.get(request.name, request.version)
        except TensorgateError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    # -- model description
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self._models.get(request.name, request.version)
        response = pb.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=model.config.platform
        )
        for spec in model.inputs:
            response.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        for spec in model.outputs:
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        return response

    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        model = self._models.get(request.name, request.version)
        max_batch = model.config.max_batch_size if model.batchable else 0
        config = pb.ModelConfig(
            name=model.name,
            platform=model.config.platform,
            backend="onnxruntime",
            max_batch_size=max_batch,
            default_model_filename="model.onnx",
        )
        for spec in model.inputs:
            dims = spec.shape[1:] if max_batch else spec.shape
            config.input.add(name=spec.name, data_type=_CONFIG_DATATYPES[spec.datatype], dims=dims)
        for spec in model.outputs:
            dims = spec.shape[1:] if max_batch else spec.shape
            config.output.add(name=spec.name, data_type=_CONFIG_DATATYPES[spec.datatype], dims=dims)
        kind = (
            pb.ModelInstanceGroup.KIND_GPU
            if model.provider.startswith("CUDA")
            else pb.ModelInstanceGroup.KIND_CPU
        )
        config.instance_group.add(name=model.name, count=model.config.instances, kind=kind)
        if max_batch:
            batching = model.config.dynamic_batching
            config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
            config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
        return pb.ModelConfigResponse(config=config)

    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self._models.get(request.name, request.version)]
        else:
            models = self._models.ready_models()
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m) for m in models])

    # -- repository
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for name, version, state, reason in self._models.index():
            if request.ready and state != ModelState.READY:
                continue
            response.models.add(name=name, version=version, state=state, reason=reason)
        return response

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        self._models.request_load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        self._models.request_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        return self._answer(
            request,
            transport_deadline(context),
            context.invocation_metadata(),
            context.add_callback,
            "ModelInfer",
        )

    def _answer(
        self,
        message: pb.ModelInferRequest,
        deadline: float | None,
        metadata: Sequence[Any],
        on_cancel: CancelHook | None,
        method: str,
    ) -> pb.ModelInferResponse:
        """One request, counted and timed; traced when tracing is on."""
        with self._metrics.track_request(message.model_name, message.model_version) as record:
            try:
                if not self._tracing.enabled:
                    response = self._service.infer(
                        decode_infer_request(message, deadline), on_cancel
                    )
                    record.version = response.version
                    return encode_infer_response(response)
                with self._tracing.server_span(method, metadata, message.model_name) as span:
                    record.trace_id = trace_id_of(span)
                    response = self._service.infer(
                        decode_infer_request(message, deadline),
                        on_cancel,
                        self._tracing.current_context(),
                    )
                    record.version = response.version
                    with self._tracing.span("encode", outputs=len(response.outputs)):
                        return encode_infer_response(response)
            except TensorgateError:
                record.model, record.version = self._labels_of_failed(message)
                raise

    def _labels_of_failed(self, message: pb.ModelInferRequest) -> tuple[str, str]:
        """Metrics labels of a failed request: the version it was meant for; an unknown model's
        name is not kept (callers choose it, and each name would make new series)."""
        try:
            return message.model_name, self._models.get(
                message.model_name, message.model_version
            ).version
        except ModelNotFoundError:
            return UNKNOWN_MODEL_LABEL, ""
        except TensorgateError:
            return message.model_name, message.model_version

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Pipelined: a reader thread hands each request to the stream pool as it arrives, and this
        thread sends each answer as soon as it is ready, in completion order (ids tell them apart)."""
        answers: queue.Queue[object] = queue.Queue()
        window = threading.BoundedSemaphore(STREAM_WINDOW)
        stream_deadline = transport_deadline(context)
        metadata = context.invocation_metadata()

        def answer(message: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            try:
                response = self._answer(
                    message, stream_deadline, metadata, None, "ModelStreamInfer"
                )
                return pb.ModelStreamInferResponse(infer_response=response)
            except TensorgateError as error:
                text = error.message
            except Exception as error:
                unexpected.report(error, "ModelStreamInfer")
                text = "internal error"
            return pb.ModelStreamInferResponse(
                error_message=text,
                infer_response=pb.ModelInferResponse(model_name=message.model_name, id=message.id),
            )

        def deliver(future: Future[pb.ModelStreamInferResponse]) -> None:
            window.release()
            if not future.cancelled():  # cancelled: the server is stopping
                answers.put(future.result())

        def wait_for_in_flight() -> None:
            """Until no request of this stream is in flight, or the client has gone."""
            for _ in range(STREAM_WINDOW):
                while not window.acquire(timeout=1.0):
                    if not context.is_active():
                        return

        def read() -> None:
            try:
                for message in request_iterator:
                    while not window.acquire(timeout=1.0):
                        if not context.is_active():
                            return
                    self._stream_executor.submit(answer, message).add_done_callback(deliver)
            except Exception:  # the client went away: nothing left to read
                log.debug("stream reader stopped", exc_info=True)
            finally:
                wait_for_in_flight()
                answers.put(_STREAM_END)

        reader = threading.Thread(target=read, name="stream-reader", daemon=True)
        reader.start()
        while True:
            try:
                item = answers.get(timeout=1.0)
            except queue.Empty:
                if context.is_active():
                    continue
                return  # the client went away; the reader stops on its own
            if item is _STREAM_END:
                return
            yield item  # type: ignore[misc]


def _duration(target: pb.StatisticDuration, count: int, ns: int) -> None:
    target.count = count
    target.ns = ns


def _statistics(model: ServedModel) -> pb.ModelStatistics:
    stats = model.stats
    message = pb.ModelStatistics(
        name=model.name,
        version=model.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    infer = message.inference_stats
    for field_name, duration in (
        ("success", stats.success),
        ("fail", stats.fail),
        ("queue", stats.queue),
        ("compute_infer", stats.compute),
        ("cache_hit", stats.cache_hit),
        ("cache_miss", stats.cache_miss),
    ):
        _duration(getattr(infer, field_name), duration.count, duration.ns)
    for size, duration in sorted(stats.batch_sizes.items()):
        batch = message.batch_stats.add(batch_size=size)
        _duration(batch.compute_infer, duration.count, duration.ns)
    return message
