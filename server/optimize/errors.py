"""The one error of ``tensorgate optimize``: a request that cannot be carried out as asked."""

from __future__ import annotations

import grpc

from tensorgate.server.errors import TensorgateError


class OptimizeError(TensorgateError):
    """Bad arguments or inputs: a missing model, a file of the wrong shape, a malformed criterion."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "optimize"
