"""A hypothesis fuzzer of ModelInferRequests against a live server: no answer is INTERNAL or
UNKNOWN, and a valid request right after each one is answered correctly. The examples are bounded
and derandomized here (the suite must not flake); benchmarks/fuzz_requests.py runs longer, random."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support.fuzzing import check, infer_requests
from tests.support.models import make_test_repository
from tests.support.processes import EXAMPLE_MODELS, serve

EXAMPLES = 150
seen: Counter[str] = Counter()


@pytest.fixture(scope="module")
def stub(
    tmp_path_factory: pytest.TempPathFactory, grpc_core: str
) -> Iterator[GRPCInferenceServiceStub]:
    root = tmp_path_factory.mktemp("fuzz")
    repository = make_test_repository(root / "models", EXAMPLE_MODELS)
    env = {"TENSORGATE_CACHE_ENABLED": "true", "TENSORGATE_CACHE_DIR": str(root / "cache")}
    with (
        serve(
            repository, "--max-message-bytes", "1000000", log_dir=root, env=env, core=grpc_core
        ) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        yield GRPCInferenceServiceStub(channel)
        assert server.process.poll() is None, "the server survived the fuzzing"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=infer_requests())
def test_no_request_makes_the_server_blame_itself(
    stub: GRPCInferenceServiceStub, request: pb.ModelInferRequest
) -> None:
    seen[check(stub, request, timeout=30)] += 1


def test_the_fuzzer_reached_past_the_first_checks() -> None:
    """The examples were not all turned away at the door: some got each kind of answer."""
    assert seen["OK"] and seen["NOT_FOUND"] and seen["INVALID_ARGUMENT"], seen
    assert sum(seen.values()) >= EXAMPLES
