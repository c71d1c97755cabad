"""The one place where exceptions become gRPC statuses."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import grpc

from tensorgate.server.error_log import ErrorLog
from tensorgate.server.errors import TensorgateError

log = logging.getLogger(__name__)
#: unexpected failures: the traceback once per distinct error per minute
unexpected = ErrorLog(log)

GENERIC_MESSAGE = "internal error; the server log has the details"


def _status_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, TensorgateError):
        return error.code, error.message
    unexpected.report(error, method)
    return grpc.StatusCode.INTERNAL, GENERIC_MESSAGE


def _abort(context: grpc.ServicerContext, error: Exception, method: str) -> None:
    context.abort(*_status_of(error, method))


def _guard_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(behavior)
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as error:
            _abort(context, error, method)
            raise  # unreachable: abort raises

    return call


def _guard_streaming(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(behavior)
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from behavior(request, context)
        except Exception as error:
            _abort(context, error, method)
            raise

    return call


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """TensorgateError -> its own status and message; anything else -> INTERNAL, details logged."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = continuation(handler_call_details)
        wrapped = self._wrap(handler, method) if handler is not None else None
        self._handlers[method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _guard_streaming(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _guard_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _guard_streaming(handler.stream_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _guard_unary_async(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(behavior)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort(*_status_of(error, method))

    return call


def _guard_streaming_async(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behavior):  # writes with context.write(): a coroutine
        return _guard_unary_async(behavior, method)

    @functools.wraps(behavior)
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await context.abort(*_status_of(error, method))

    return call


class AsyncErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """The same mapping for the grpc.aio core."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        wrapped = self._wrap(handler, method) if handler is not None else None
        self._handlers[method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary_async(handler.unary_unary, method), **options
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _guard_streaming_async(handler.unary_stream, method), **options
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _guard_unary_async(handler.stream_unary, method), **options
            )
        return grpc.stream_stream_rpc_method_handler(
            _guard_streaming_async(handler.stream_stream, method), **options
        )
