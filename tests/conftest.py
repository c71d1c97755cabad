"""Shared fixtures: real servers on free ports (see tests/support/processes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import ServerProcess, serve

#: both gRPC cores serve the same request path; the integration tests run on each
GRPC_CORES = ("aio", "threads")


@pytest.fixture(scope="module", params=GRPC_CORES)
def grpc_core(request: pytest.FixtureRequest) -> str:
    """The gRPC core (``--grpc-core``) of the server under test."""
    return str(request.param)


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `tensorgate serve` on the example models, shared by the tests that only read from it."""
    with serve(log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server
