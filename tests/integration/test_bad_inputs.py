"""Hostile and odd requests against a real server: each gets a clear status, never INTERNAL, and
the caller cannot grow the server's metric series or its log."""

from __future__ import annotations

import math
import random
import re
import shutil
import string
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.tools.probes import free_port
from tests.support.models import make_test_repository
from tests.support.processes import EXAMPLE_MODELS, ServerProcess, serve

PIXELS = np.random.default_rng(1).random((1, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, grpc_core: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bad-inputs")
    repository = make_test_repository(root / "models", EXAMPLE_MODELS)
    shutil.copytree(EXAMPLE_MODELS / "cnn", repository / "cnn")
    metrics_port = free_port()
    env = {"TENSORGATE_CACHE_ENABLED": "true", "TENSORGATE_CACHE_DIR": str(root / "cache")}
    args = ("--metrics-port", str(metrics_port))
    with serve(repository, *args, log_dir=root, env=env, core=grpc_core) as process:
        process.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield process


@pytest.fixture()
def stub(server: ServerProcess) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield GRPCInferenceServiceStub(channel)


def digits_request(
    *,
    version: str = "",
    shape: list[int] | None = None,
    raw: bytes | None = None,
    typed: list[float] | None = None,
    parameters: dict[str, pb.InferParameter] | None = None,
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits", model_version=version)
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=shape or [1, 64])
    if typed is not None:
        tensor.contents.fp32_contents.extend(typed)
    if raw is not None or typed is None:
        request.raw_input_contents.append(PIXELS.tobytes() if raw is None else raw)
    for key, value in (parameters or {}).items():
        request.parameters[key].CopyFrom(value)
    return request


def assert_answers(stub: GRPCInferenceServiceStub) -> pb.ModelInferResponse:
    """A valid request right after: the server still serves, and correctly."""
    response = stub.ModelInfer(digits_request(), timeout=20)
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    return response


BAD_INPUTS = [
    (
        "shape [0, 2^62]",
        digits_request(shape=[0, 2**62], raw=b""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': shape [0, 4611686018427387904] is larger than any tensor can be",
    ),
    (
        "65 dimensions",
        digits_request(shape=[1] * 65, raw=b"\0" * 4),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': expected at most 64 dimensions, received 65",
    ),
    (
        "a version of 4301 digits",
        digits_request(version="1" * 4301),
        grpc.StatusCode.NOT_FOUND,
        "model 'digits' has no version '1111",
    ),
    (
        "a version in other digits",
        digits_request(version="\u00b2"),
        grpc.StatusCode.NOT_FOUND,
        "model 'digits' has no version",
    ),
    (
        "a NaN timeout",
        digits_request(parameters={"timeout": pb.InferParameter(double_param=math.nan)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'timeout': expected a positive number of microseconds, received nan",
    ),
    (
        "a zero timeout",
        digits_request(parameters={"timeout": pb.InferParameter(int64_param=0)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'timeout': expected a positive number of microseconds, received 0",
    ),
    (
        "a negative timeout",
        digits_request(parameters={"timeout": pb.InferParameter(int64_param=-5)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "received -5",
    ),
    (
        "raw and typed contents together",
        digits_request(raw=PIXELS.tobytes(), typed=[0.0] * 64),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': expected its data either in raw_input_contents or in typed contents, "
        "received both",
    ),
    (
        "cache as a string",
        digits_request(parameters={"cache": pb.InferParameter(string_param="false")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'cache': expected a bool parameter (bool_param true or false), received str "
        "'false'",
    ),
    (
        "cache as a number",
        digits_request(parameters={"cache": pb.InferParameter(int64_param=0)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'cache'",
    ),
]


@pytest.mark.parametrize(
    ("request_message", "code", "fragment"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_each_bad_input_gets_its_status_and_the_server_keeps_serving(
    stub: GRPCInferenceServiceStub,
    request_message: pb.ModelInferRequest,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request_message, timeout=20)
    assert error.value.code() == code, error.value.details()
    assert fragment in error.value.details()
    assert_answers(stub)


def test_a_timeout_beyond_what_the_server_can_wait_is_clamped(
    stub: GRPCInferenceServiceStub,
) -> None:
    """Sent by many callers at once to the compute-bound cnn, so that most wait on a busy model."""
    no_cache = pb.InferParameter(bool_param=False)
    huge = (pb.InferParameter(int64_param=2**63 - 1), pb.InferParameter(double_param=1e300))
    requests = []
    for index in range(32):
        request = pb.ModelInferRequest(model_name="cnn")
        request.inputs.add(name="image", datatype="FP32", shape=[8, 3, 32, 32])
        request.raw_input_contents.append(np.zeros((8, 3, 32, 32), np.float32).tobytes())
        request.parameters["timeout"].CopyFrom(huge[index % 2])
        request.parameters["cache"].CopyFrom(no_cache)
        requests.append(request)
    with ThreadPoolExecutor(16) as pool:  # no gRPC deadline: the OIP timeout is the only one
        calls = [pool.submit(stub.ModelInfer, request) for request in requests]
        answers = [call.result(timeout=120) for call in calls]
    assert {a.model_version for a in answers} == {"1"}


def test_version_01_is_version_1(stub: GRPCInferenceServiceStub) -> None:
    response = stub.ModelInfer(digits_request(version="01"), timeout=20)
    assert response.model_version == "1"
    expected = assert_answers(stub)
    assert response.raw_output_contents == expected.raw_output_contents
    metadata = stub.ModelMetadata(
        pb.ModelMetadataRequest(name="digits", version="0001"), timeout=20
    )
    assert metadata.versions == ["1"]


def test_metric_series_stay_bounded_whatever_names_and_versions_callers_send(
    server: ServerProcess, stub: GRPCInferenceServiceStub
) -> None:
    rng = random.Random(11)

    def noise(size: int) -> str:
        return "".join(rng.choices(string.ascii_letters + string.digits + "/._-", k=size))

    for index in range(200):
        request = digits_request(version=noise(rng.randint(1, 12)) if index % 3 else "")
        if index % 7 == 0:
            request.model_version = "0" * rng.randint(1, 30) + "1"
        if index % 2:
            request.model_name = noise(rng.randint(1, 20))
        if index % 5 == 0:
            request.model_name, request.model_version = "failing", str(rng.randint(2, 10**6))
        try:
            stub.ModelInfer(request, timeout=20)
        except grpc.RpcError as error:
            assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    port = server.metrics_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    series = [
        dict(re.findall(r'(\w+)="([^"]*)"', labels))
        for labels in re.findall(r"^tensorgate_requests_total\{([^}]*)\}", text, re.M)
    ]
    labels = {(one["model"], one["version"]) for one in series}
    assert ("digits", "1") in labels, series
    served = {"digits", "failing", "cnn", "_unknown"}
    assert {model for model, _ in labels} <= served, labels
    assert {version for _, version in labels} <= {"", "1", "_unknown"}, labels


def test_an_unexpected_error_logs_its_traceback_once_a_minute(
    server: ServerProcess, stub: GRPCInferenceServiceStub
) -> None:
    request = pb.ModelInferRequest(model_name="failing")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.zeros((2, 4), np.float32).tobytes())
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=20)
        assert error.value.code() == grpc.StatusCode.INTERNAL  # a failure inside the model
    assert_answers(stub)
    log = server.log()
    assert log.count("unexpected failure in /inference.GRPCInferenceService/ModelInfer") == 1, log[
        -4000:
    ]
    assert log.count("Traceback") == 1
