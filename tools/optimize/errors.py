"""The one error of ``tensorgate optimize``: a request that cannot be carried out as asked."""

from __future__ import annotations

from tensorgate.server.inputs import InputError


class OptimizeError(InputError):
    """Bad arguments or inputs: a missing model, a file of the wrong shape, a malformed criterion."""

    reason = "optimize"
