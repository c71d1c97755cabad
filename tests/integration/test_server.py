"""A real `tensorgate serve` process on a free port, driven by the real client and the raw stub."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from tensorgate.client import AsyncClient, Client, InferenceServerError, RetryPolicy
from tensorgate.codec.tensors import DATATYPE_TO_DTYPE, to_raw
from tensorgate.examples.datasets import digits_split
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support.models import ONNX_TYPES, make_test_repository
from tests.support.processes import EXAMPLE_MODELS, ServerProcess, health_status, serve

MAX_MESSAGE_BYTES = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, grpc_core: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    repository = make_test_repository(root / "models", EXAMPLE_MODELS)
    with serve(
        repository,
        "--max-message-bytes",
        str(MAX_MESSAGE_BYTES),
        "--model-control-mode",
        "explicit",
        log_dir=root,
        core=grpc_core,
    ) as process:
        yield process


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.target, timeout=20) as c:
        yield c


@pytest.fixture()
def stub(server: ServerProcess) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield GRPCInferenceServiceStub(channel)


def typed_sample(datatype: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if datatype == "BYTES":
        return np.array([[b"a", b"bc", b""], [b"\x01\x00", "ü".encode(), b"xyz"]], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    dtype = DATATYPE_TO_DTYPE[datatype]
    if dtype.kind == "f":
        return rng.normal(size=(2, 3)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, (2, 3), dtype=dtype, endpoint=True)


def all_inputs() -> dict[str, np.ndarray]:
    return {f"in_{d.lower()}": typed_sample(d) for d in ONNX_TYPES}


# -- server and model description


def test_server_is_live_ready_and_healthy(client: Client, server: ServerProcess) -> None:
    assert client.live() and client.ready()
    assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(server.target, "digits") == health_pb2.HealthCheckResponse.SERVING


def test_metadata_is_read_from_the_onnx_graph(client: Client) -> None:
    metadata = client.metadata("all_types")
    assert metadata.platform == "onnxruntime_onnx"
    assert {t.name: t.datatype for t in metadata.inputs} == {
        f"in_{d.lower()}": d for d in ONNX_TYPES
    }
    assert all(t.shape == (-1, 3) for t in metadata.inputs)


def test_model_config_describes_batching(stub: GRPCInferenceServiceStub) -> None:
    config = stub.ModelConfig(pb.ModelConfigRequest(name="digits"), timeout=10).config
    assert config.max_batch_size == 64
    assert [(i.name, list(i.dims), pb.DataType.Name(i.data_type)) for i in config.input] == [
        ("pixels", [64], "TYPE_FP32")
    ]
    assert {o.name for o in config.output} == {"label", "probabilities"}


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
    names = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


# -- inference


def test_every_datatype_round_trips_as_raw_bytes(client: Client) -> None:
    inputs = all_inputs()
    outputs = client.infer("all_types", inputs)
    for datatype in ONNX_TYPES:
        sent = inputs[f"in_{datatype.lower()}"]
        received = outputs[f"out_{datatype.lower()}"]
        assert received.shape == sent.shape, datatype
        assert (received == sent).all(), datatype


@pytest.mark.parametrize("datatype", [d for d in ONNX_TYPES if d != "FP16"])
def test_typed_contents_are_accepted(stub: GRPCInferenceServiceStub, datatype: str) -> None:
    from tensorgate.codec.tensors import CONTENTS_FIELD

    inputs = all_inputs()
    request = pb.ModelInferRequest(model_name="all_types")
    for name, array in inputs.items():
        dt = name.removeprefix("in_").upper()
        tensor = request.inputs.add(name=name, datatype=dt, shape=array.shape)
        if dt == "FP16":
            continue
        getattr(tensor.contents, CONTENTS_FIELD[dt]).extend(array.reshape(-1).tolist())
    # FP16 only travels raw: drop it, and ask for just the output under test
    del request.inputs[[t.name for t in request.inputs].index("in_fp16")]
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(request, timeout=10)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'in_fp16' is missing" in missing.value.details()


def test_typed_contents_for_one_input_model(stub: GRPCInferenceServiceStub) -> None:
    x_test = digits_split()[1][:5]
    request = pb.ModelInferRequest(model_name="digits", outputs=[{"name": "label"}])
    request.inputs.add(
        name="pixels", datatype="FP32", shape=x_test.shape
    ).contents.fp32_contents.extend(x_test.reshape(-1).tolist())
    response = stub.ModelInfer(request, timeout=10)
    assert [o.name for o in response.outputs] == ["label"]
    assert len(response.raw_output_contents) == 1
    labels = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
    assert labels.shape == (5,)


def test_bytes_that_are_not_utf8_are_refused(client: Client) -> None:
    inputs = all_inputs()
    inputs["in_bytes"] = np.array([[b"ok", b"\xff\xfe", b"x"]] * 2, dtype=object)
    with pytest.raises(InferenceServerError) as error:
        client.infer("all_types", inputs)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'in_bytes': BYTES element 1 is not valid UTF-8" in error.value.message


def test_requested_outputs_are_honored(client: Client) -> None:
    outputs = client.infer("all_types", all_inputs(), outputs=["out_fp16", "out_bytes"])
    assert set(outputs) == {"out_fp16", "out_bytes"}


def test_digits_classifies_the_held_out_set(client: Client) -> None:
    _, x_test, _, y_test = digits_split()
    labels = np.concatenate(
        [
            client.infer("digits", {"pixels": x_test[i : i + 64]}, outputs=["label"])["label"]
            for i in range(0, len(x_test), 64)
        ]
    )
    assert (labels == y_test).mean() >= 0.95


def test_newest_version_is_served(client: Client) -> None:
    x = np.zeros((1, 4), np.float32)
    assert client.infer("add", {"x": x})["y"].tolist() == [[2.0] * 4]
    with pytest.raises(InferenceServerError) as not_loaded:
        client.infer("add", {"x": x}, version="1")
    assert not_loaded.value.code == grpc.StatusCode.UNAVAILABLE


def test_stream_answers_every_request_with_its_id(server: ServerProcess) -> None:
    x_test = digits_split()[1]
    requests = [{"pixels": x_test[i : i + 1]} for i in range(200)]
    requests[5] = {"pixels": x_test[:1, :10]}  # one bad request in the middle

    async def run() -> list:
        async with AsyncClient(server.target, timeout=60) as client:
            return [r async for r in client.stream_infer("digits", requests, outputs=["label"])]

    results = asyncio.run(run())
    assert sorted(int(r.id) for r in results) == list(range(200))
    failed = [r for r in results if r.error]
    assert [r.id for r in failed] == ["5"]
    assert "input 'pixels': dimension 1 must be 64" in failed[0].error
    assert all(r.outputs["label"].shape == (1,) for r in results if not r.error)


def test_async_client_keeps_hundreds_in_flight(server: ServerProcess) -> None:
    x_test = digits_split()[1]

    async def run() -> list[np.ndarray]:
        async with AsyncClient(server.target, timeout=60) as client:
            calls = [
                client.infer("digits", {"pixels": x_test[i : i + 1]}, outputs=["label"])
                for i in range(300)
            ]
            return [r["label"][0] for r in await asyncio.gather(*calls)]

    with Client(server.target) as client:
        direct = [
            client.infer("digits", {"pixels": x_test[i : i + 50]})["label"]
            for i in range(0, 300, 50)
        ]
    assert asyncio.run(run()) == np.concatenate(direct).tolist()


# -- bad input: the right code, a message naming the tensor, and the server keeps serving


def raw_request(model: str = "digits", **changes: object) -> pb.ModelInferRequest:
    pixels = np.ones((2, 64), np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="pixels", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(to_raw(pixels))
    for key, value in changes.items():
        if key == "datatype":
            request.inputs[0].datatype = value  # type: ignore[assignment]
        elif key == "shape":
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(value)  # type: ignore[arg-type]
        elif key == "raw":
            request.raw_input_contents[0] = value  # type: ignore[assignment]
        elif key == "name":
            request.inputs[0].name = value  # type: ignore[assignment]
        elif key == "output":
            request.outputs.add(name=value)
        elif key == "version":
            request.model_version = value  # type: ignore[assignment]
        elif key == "timeout":
            request.parameters["timeout"].string_param = value  # type: ignore[assignment]
    return request


BAD_REQUESTS = [
    (
        "wrong datatype",
        raw_request(datatype="FP64", raw=b"\0" * 1024),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': expected datatype FP32, received FP64",
    ),
    (
        "wrong rank",
        raw_request(shape=[128]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': expected rank 2 (shape [-1, 64]), received rank 1",
    ),
    (
        "wrong dimension",
        raw_request(shape=[4, 32]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': dimension 1 must be 64",
    ),
    (
        "raw length",
        raw_request(raw=b"\0" * 100),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': raw content has 100 bytes, expected 512",
    ),
    (
        "unknown datatype",
        raw_request(datatype="FP8"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'pixels': unsupported datatype 'FP8'",
    ),
    (
        "unknown input",
        raw_request(name="image"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model 'digits' has no input 'image'",
    ),
    (
        "unknown output",
        raw_request(output="logits"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "requested output 'logits' is unknown",
    ),
    (
        "bad timeout",
        raw_request(timeout="soon"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'timeout'",
    ),
    ("unknown model", raw_request(model="nope"), grpc.StatusCode.NOT_FOUND, "model 'nope'"),
    (
        "unknown version",
        raw_request(version="9"),
        grpc.StatusCode.NOT_FOUND,
        "model 'digits' has no version '9'",
    ),
    (
        "too large",
        raw_request(shape=[1, 64], raw=b"\0" * (MAX_MESSAGE_BYTES + 10)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        str(MAX_MESSAGE_BYTES),
    ),
]


@pytest.mark.parametrize(
    ("case", "request_message", "code", "fragment"),
    BAD_REQUESTS,
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(
    stub: GRPCInferenceServiceStub,
    case: str,
    request_message: pb.ModelInferRequest,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request_message, timeout=10)
    assert error.value.code() == code, error.value.details()
    assert fragment in error.value.details()
    response = stub.ModelInfer(raw_request(), timeout=10)
    assert len(response.raw_output_contents) == 2


def test_a_failure_inside_the_model_is_internal_with_a_generic_message(
    client: Client, server: ServerProcess
) -> None:
    with pytest.raises(InferenceServerError) as error:
        client.infer("failing", {"x": np.zeros((2, 4), np.float32)})
    assert error.value.code == grpc.StatusCode.INTERNAL
    assert "server log" in error.value.message
    assert "Reshape" not in error.value.message  # details stay in the log
    assert client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})["label"].shape == (1,)


# -- the repository at run time


def test_unload_and_load_without_failing_other_models(
    client: Client, server: ServerProcess
) -> None:
    pixels = np.zeros((1, 64), np.float32)
    failures: list[Exception] = []
    done = threading.Event()

    def traffic() -> None:
        with Client(server.target, timeout=20) as other:
            while not done.is_set():
                try:
                    other.infer("digits", {"pixels": pixels})
                except Exception as error:
                    failures.append(error)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        client.unload("add")
        assert not client.model_ready("add")
        assert health_status(server.target, "add") == health_pb2.HealthCheckResponse.NOT_SERVING
        states = {m.name: m.state for m in client.models()}
        assert states["add"] == "UNAVAILABLE" and states["digits"] == "READY"
        with pytest.raises(InferenceServerError) as unloaded:
            client.infer("add", {"x": np.zeros((1, 4), np.float32)})
        assert unloaded.value.code == grpc.StatusCode.UNAVAILABLE
        client.load("add")
        assert client.model_ready("add")
        assert client.infer("add", {"x": np.zeros((1, 4), np.float32)})["y"].tolist() == [[2.0] * 4]
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert failures == []


@pytest.mark.parametrize("name", ["missing", "a" * 5000, "../digits", ".hidden"])
def test_loading_an_unknown_model_is_not_found(client: Client, name: str) -> None:
    with pytest.raises(InferenceServerError) as error:
        client.load(name)
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_statistics_count_executions(client: Client, stub: GRPCInferenceServiceStub) -> None:
    def executions() -> int:
        response = stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"), timeout=10)
        return response.model_stats[0].execution_count

    before = executions()
    client.infer("digits", {"pixels": np.zeros((3, 64), np.float32)})
    assert executions() == before + 1


def test_client_retries_unavailable_a_bounded_number_of_times(
    tmp_path: Path, grpc_core: str
) -> None:
    repository = make_test_repository(tmp_path / "models")
    env = {"TENSORGATE_FAULT_ERROR_RATE": "1.0"}
    with (
        serve(repository, "--models", "add", env=env, log_dir=tmp_path, core=grpc_core) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
        with (
            Client(server.target, retry=policy, timeout=10) as client,
            pytest.raises(InferenceServerError) as error,
        ):
            client.infer("add", {"x": np.zeros((1, 4), np.float32)})
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert "injected fault" in error.value.message
        stats = GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name="add"), timeout=10
        )
        assert stats.model_stats[0].inference_stats.fail.count == 3


def test_a_large_request_to_a_missing_model_is_not_found_before_decoding(
    stub: GRPCInferenceServiceStub,
) -> None:
    # 200,000 empty BYTES elements where the shape says 1: decoding them would answer
    # INVALID_ARGUMENT, so NOT_FOUND shows that the model was looked up first
    message = pb.ModelInferRequest(model_name="nope")
    message.inputs.add(name="text", datatype="BYTES", shape=[1])
    message.raw_input_contents.append(b"\0\0\0\0" * 200_000)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(message, timeout=20)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'nope'" in raised.value.details()
