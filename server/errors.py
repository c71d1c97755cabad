"""The server's exception tree. Every error carries its gRPC status; one interceptor maps them.

TensorgateError                 base; INTERNAL with a generic message unless a subclass says more
├── InvalidInputError           INVALID_ARGUMENT: a tensor's name, datatype, shape or bytes are wrong
├── ModelNotFoundError          NOT_FOUND: no such model or version
├── ModelUnavailableError       UNAVAILABLE: the model is loading, unloading or unloaded
├── ModelLoadError              FAILED_PRECONDITION: the model's files are broken (config, ONNX, provider)
├── ModelControlError           FAILED_PRECONDITION: Load/Unload refused by the model control mode
├── RepositoryError             the repository is missing or empty: the server does not start
├── ServerUnavailableError      UNAVAILABLE: draining, or an injected fault
├── ResourceExhaustedError      RESOURCE_EXHAUSTED: a full queue, a message over the limit
├── DeadlineExceededError       DEADLINE_EXCEEDED: dropped before compute, its deadline passed
└── RequestCancelledError       CANCELLED: the caller went away before the answer
"""

from __future__ import annotations

import grpc


class TensorgateError(Exception):
    """Base of every error the server answers with; ``code`` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: a short machine-readable reason, used as a metrics label (e.g. ``queue_full``)
    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidInputError(TensorgateError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"


class ModelNotFoundError(TensorgateError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class ModelUnavailableError(TensorgateError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "model_unavailable"


class ModelLoadError(TensorgateError):
    """A model that cannot load; ``message`` is one line naming the file, the key or line, and what
    was expected. It becomes the model's UNAVAILABLE reason."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "load_failed"


class ModelControlError(TensorgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "model_control"


class RepositoryError(TensorgateError):
    """The repository path does not exist or holds no model: nothing to serve."""

    reason = "repository"


class ServerUnavailableError(TensorgateError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"


class ResourceExhaustedError(TensorgateError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"


class DeadlineExceededError(TensorgateError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "deadline"


class RequestCancelledError(TensorgateError):
    code = grpc.StatusCode.CANCELLED
    reason = "cancelled"
