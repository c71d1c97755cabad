"""The parts of ``tensorgate bench`` that need no server: requests, shares, ratios, repository copy,
scenarios, /proc CPU and the echo server."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from tensorgate.codec.messages import build_infer_request
from tensorgate.codec.tensors import from_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.server.model_config import load_model_config
from tensorgate.server.repository import ModelRepository
from tensorgate.server.settings import Settings
from tensorgate.server.tensors import TensorSpec
from tensorgate.tools.bench.cpu import process_tree, tree_cpu_seconds
from tensorgate.tools.bench.echo import create_server
from tensorgate.tools.bench.load import LoadSpec
from tensorgate.tools.bench.payload import PayloadSpec, RequestSource
from tensorgate.tools.bench.repository import dump_toml, repository_without_batching
from tensorgate.tools.bench.scenario import Scenario, ServerConfig, load_scenario
from tensorgate.tools.bench.summary import add_ratios
from tensorgate.tools.bench.thin import ThinModel
from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT

IMAGE = TensorSpec("image", "FP32", (-1, 3, 8, 8))
IDS = TensorSpec("ids", "INT64", (-1, 4))
FIXED = TensorSpec("fixed", "FP32", (2, 5))


def decode(payload: bytes) -> tuple[pb.ModelInferRequest, dict[str, np.ndarray]]:
    request = pb.ModelInferRequest.FromString(payload)
    arrays = {
        t.name: from_raw(raw, t.datatype, t.shape, t.name)
        for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
    }
    return request, arrays


def test_requests_carry_one_fresh_random_sample_of_each_input() -> None:
    source = RequestSource(PayloadSpec("cnn", (IMAGE, IDS, FIXED), version="2"))
    payloads = [source.next() for _ in range(600)]  # more than one block of rows
    assert len(set(payloads)) == len(payloads)
    request, arrays = decode(payloads[0])
    assert (request.model_name, request.model_version) == ("cnn", "2")
    assert {name: a.shape for name, a in arrays.items()} == {
        "image": (1, 3, 8, 8),
        "ids": (1, 4),
        "fixed": (2, 5),
    }
    assert arrays["image"].dtype == np.float32 and 0 <= arrays["image"].min() < 1
    assert arrays["ids"].dtype == np.int64


def test_repeated_requests_come_from_one_pool_shared_by_every_source() -> None:
    pixels = TensorSpec("pixels", "FP32", (-1, 64))
    pool = PayloadSpec("digits", (pixels,), repeat_ratio=1.0, repeat_pool=3)
    first = {RequestSource(pool).next() for _ in range(100)}
    second = {RequestSource(pool).next() for _ in range(100)}
    assert len(first) <= 3 and first == second


@pytest.mark.parametrize(
    ("concurrency", "processes", "shares"),
    [(10, 3, [4, 3, 3]), (1, 4, [1]), (64, 1, [64])],
)
def test_closed_loop_concurrency_is_shared_among_processes(
    concurrency: int, processes: int, shares: list[int]
) -> None:
    spec = LoadSpec(("t",), PayloadSpec("m", ()), concurrency=concurrency)
    assert [s.concurrency for s in spec.split(processes)] == shares


def test_open_loop_rate_is_shared_among_processes() -> None:
    spec = LoadSpec(("t",), PayloadSpec("m", ()), mode="open", rate=900, max_in_flight=300)
    parts = spec.split(3)
    assert [(p.rate, p.max_in_flight) for p in parts] == [(300, 100)] * 3


def _run(target: str, concurrency: int, rps: float, p50: float, cpu: float) -> dict:
    return {
        "target": target,
        "mode": "closed",
        "concurrency": concurrency,
        "rate": None,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50},
        "server_cpu_us_per_request": cpu,
    }


def test_ratios_compare_with_limit_echo_and_first_server_at_the_same_load() -> None:
    runs = [
        _run("on", 64, 900.0, 5.0, 300.0),
        _run("off", 64, 300.0, 20.0, 500.0),
        _run("on", 1, 100.0, 1.0, 400.0),
        _run("echo", 64, 1000.0, 4.0, 200.0),
    ]
    add_ratios(runs, limit_samples_per_s=1800.0)
    on64, off64, on1, echo = runs
    assert on64["ratios"] == pytest.approx(
        {
            "throughput_vs_limit": 0.5,
            "throughput_vs_echo": 0.9,
            "p50_minus_echo_ms": 1.0,
            "server_cpu_minus_echo_us": 100.0,
            "throughput_vs_thin": None,  # no thin run in this scenario
            "server_cpu_minus_thin_us": None,
            "server_cpu_vs_thin": None,
            "p50_minus_thin_ms": None,
        }
    )
    assert off64["ratios"]["throughput_vs_on"] == pytest.approx(1 / 3)
    assert on1["ratios"]["throughput_vs_echo"] is None  # no echo run at concurrency 1
    assert "ratios" not in echo


def test_ratios_read_throughput_against_the_faster_thin_and_cpu_against_the_same_core() -> None:
    runs = [
        {**_run("server", 64, 1200.0, 5.0, 550.0), "grpc_core": "threads"},
        {**_run("default", 64, 1500.0, 4.0, 500.0), "grpc_core": None},
        _run("thin-threads", 64, 1000.0, 6.0, 500.0),
        _run("thin-aio", 64, 1250.0, 4.5, 400.0),
    ]
    add_ratios(runs, limit_samples_per_s=None)
    server, default, thin_threads, thin_aio = runs

    assert server["ratios"]["throughput_vs_thin"] == pytest.approx(1200 / 1250)  # the faster
    assert server["ratios"]["server_cpu_minus_thin_us"] == pytest.approx(50.0)  # same core
    assert server["ratios"]["server_cpu_vs_thin"] == pytest.approx(1.1)
    assert server["ratios"]["p50_minus_thin_ms"] == pytest.approx(-1.0)
    assert server["thin_reference"] == "thin-threads"
    # core unknown: CPU and latency against the faster thin server
    assert default["thin_reference"] == "thin-aio"
    assert default["ratios"]["server_cpu_minus_thin_us"] == pytest.approx(100.0)
    assert default["ratios"]["throughput_vs_thin"] == pytest.approx(1.2)
    # the thin rows read against themselves; the first server config is not a thin one
    assert thin_aio["ratios"]["throughput_vs_thin"] == pytest.approx(1.0)
    assert thin_threads["ratios"]["throughput_vs_thin"] == pytest.approx(0.8)
    assert default["ratios"]["throughput_vs_server"] == pytest.approx(1.25)


def test_the_grpc_core_of_a_server_config_is_read_from_its_flags(monkeypatch) -> None:
    monkeypatch.delenv("TENSORGATE_GRPC_CORE", raising=False)
    assert ServerConfig(server_args=["--grpc-core=aio"]).grpc_core == "aio"
    assert ServerConfig(server_args=["--grpc-core", "threads", "--no-cache"]).grpc_core == "threads"
    assert ServerConfig(server_args=["--no-cache"]).grpc_core == "aio"  # the server's default
    monkeypatch.setenv("TENSORGATE_GRPC_CORE", "threads")
    assert ServerConfig(server_args=["--no-cache"]).grpc_core == "threads"
    assert ServerConfig(server_args=["--grpc-core=aio"]).grpc_core == "aio"


def test_repository_without_batching_keeps_the_rest_of_the_config(tmp_path: Path) -> None:
    with repository_without_batching(EXAMPLE_MODELS, "cnn") as repo:
        config = load_model_config(repo / "cnn")
        original = load_model_config(EXAMPLE_MODELS / "cnn")
        assert config.dynamic_batching.enabled is False
        assert config.max_batch_size == original.max_batch_size
        assert config.warmup == original.warmup
        location = ModelRepository(repo).locate("cnn")
        assert (
            location.path.read_bytes()
            == ModelRepository(EXAMPLE_MODELS).locate("cnn").path.read_bytes()
        )
        assert ModelRepository(repo).model_names() == ["cnn"]
    assert not repo.exists()


def test_toml_dump_reads_back() -> None:
    document = {
        "max_batch_size": 8,
        "name": 'a "quoted" name',
        "dynamic_batching": {"enabled": False, "preferred_batch_sizes": [4, 8]},
        "session": {"providers": ["CPUExecutionProvider"], "ratio": 0.5},
    }
    assert tomllib.loads(dump_toml(document)) == document


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "benchmarks").glob("*.toml")), ids=lambda p: p.name
)
def test_every_scenario_file_is_valid(path: Path) -> None:
    scenario = load_scenario(path, {})
    assert scenario.title == path.stem
    assert scenario.out_path == Path("benchmarks/results") / f"{path.stem}.json"


def test_flags_override_the_scenario_and_reach_every_server() -> None:
    path = REPO_ROOT / "benchmarks" / "batching_on_off.toml"
    scenario = load_scenario(
        path, {"model": "mlp", "duration": 2.0, "name": None}, ["--grpc-threads=64"], None
    )
    assert (scenario.model, scenario.duration) == ("mlp", 2.0)
    assert [s.batching for s in scenario.servers] == [True, False]
    assert all(s.server_args[-1] == "--grpc-threads=64" for s in scenario.servers)


@pytest.mark.parametrize(
    "document",
    [
        {"model": "m"},  # nothing to measure
        {"model": "m", "serve": True, "concurrency": [1]},  # no repository to serve
        {"model": "m", "targets": ["h:1"]},  # no load given
        {"model": "m", "targets": ["h:1"], "concurrency": [0]},
        {"model": "m", "targets": ["h:1"], "rates": [5], "repeat_ratio": 0.5},
        {"model": "m", "targets": ["h:1"], "rates": [5], "servers": [{"label": "echo"}]},
        {"model": "m", "targets": ["h:1"], "rates": [5], "servers": [{"label": "thin-aio"}]},
        {"model": "m", "thin": True, "concurrency": [1]},  # no repository to serve it from
    ],
)
def test_inconsistent_scenarios_are_refused(document: dict) -> None:
    with pytest.raises(ValidationError):
        Scenario.model_validate(document)


def test_cpu_of_a_process_tree_counts_its_children() -> None:
    # spins until it has used 0.3 s of CPU (however busy the machine), or 30 s have passed
    busy = (
        "import time\nend = time.monotonic() + 30\n"
        "while time.process_time() < 0.3 and time.monotonic() < end: pass\n"
    )
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        me = os.getpid()
        assert child.pid in process_tree([me])
        before = tree_cpu_seconds([me])
        child.wait(30)
    finally:
        child.kill()
    # reaped, its time moved into our cutime: the tree still counts it
    assert tree_cpu_seconds([me]) - before >= 0.2
    assert process_tree([2**22 + 12345]) == set()  # no such process


def test_echo_server_answers_model_infer_with_a_fixed_response() -> None:
    server, port = create_server("127.0.0.1:0", threads=4, max_concurrent_rpcs=8)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = GRPCInferenceServiceStub(channel)
            reply = stub.ModelInfer(pb.ModelInferRequest(model_name="any"), timeout=10)
            assert reply.outputs[0].shape == [1, 1]
            with pytest.raises(grpc.RpcError) as raised:
                stub.ModelMetadata(pb.ModelMetadataRequest(name="any"), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0).wait(5)


def test_the_thin_model_answers_what_onnx_runtime_computes_as_raw_outputs() -> None:
    thin = ThinModel(Settings(model_repository=EXAMPLE_MODELS, warmup=False), "digits")
    pixels = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    request = build_infer_request("digits", {"pixels": pixels}, request_id="r1")

    reply = thin.infer(request)

    expected = thin.session.run(None, {"pixels": pixels})
    assert reply.id == "r1" and reply.model_name == "digits"
    assert [o.name for o in reply.outputs] == thin.output_names
    for tensor, raw, want in zip(reply.outputs, reply.raw_output_contents, expected, strict=True):
        got = from_raw(raw, tensor.datatype, list(tensor.shape), tensor.name)
        np.testing.assert_array_equal(got, want)
