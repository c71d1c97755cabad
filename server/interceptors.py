"""The one place where exceptions become gRPC statuses."""

from __future__ import annotations

import functools
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


def _abort(context: grpc.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, TensorgateError):
        context.abort(error.code, error.message)
    unexpected.report(error, method)
    context.abort(grpc.StatusCode.INTERNAL, GENERIC_MESSAGE)


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
