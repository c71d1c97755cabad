"""The client's one exception type.

InferenceServerError      any failed call: ``code`` is the gRPC status, ``message`` the server's text
"""

from __future__ import annotations

import grpc


class InferenceServerError(Exception):
    """A call failed. ``code`` is the gRPC status code, ``message`` what the server said."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> InferenceServerError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
