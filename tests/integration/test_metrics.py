"""The worker's /metrics: the series of issue 6 with their labels, and trace exemplars."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tensorgate.client import Client, InferenceServerError
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.processes import EXAMPLE_MODELS, ServerProcess, free_port, serve


def scrape(port: int, openmetrics: bool = False) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if openmetrics:
        request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as otlp:
        yield otlp


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver, grpc_core: str
) -> Iterator[tuple[ServerProcess, int]]:
    metrics_port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "worker-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with serve(
        EXAMPLE_MODELS,
        "--models",
        "digits",
        "--metrics-port",
        str(metrics_port),
        env=env,
        log_dir=tmp_path_factory.mktemp("metrics"),
        core=grpc_core,
    ) as process:
        yield process, metrics_port


def test_series_carry_the_documented_names_and_labels(server: tuple[ServerProcess, int]) -> None:
    process, metrics_port = server
    with Client(process.target) as client:
        for _ in range(5):
            client.infer("digits", {"pixels": np.zeros((2, 64), np.float32)})
        with pytest.raises(InferenceServerError):
            client.infer("digits", {"pixels": np.zeros((2, 63), np.float32)})
    found = samples(scrape(metrics_port))
    ok = ("tensorgate_requests_total", (("model", "digits"), ("status", "OK"), ("version", "1")))
    bad = (
        "tensorgate_requests_total",
        (("model", "digits"), ("status", "INVALID_ARGUMENT"), ("version", "1")),
    )
    assert found[ok] >= 5
    assert found[bad] == 1
    duration_count = (
        "tensorgate_request_duration_seconds_count",
        (("model", "digits"), ("status", "OK"), ("version", "1")),
    )
    assert found[duration_count] >= 5
    assert found[("tensorgate_batch_size_sum", (("model", "digits"),))] >= 10
    assert found[("tensorgate_compute_duration_seconds_count", (("model", "digits"),))] >= 5
    assert found[("tensorgate_queue_duration_seconds_count", (("model", "digits"),))] >= 5
    assert found[("tensorgate_model_ready", (("model", "digits"), ("version", "1")))] == 1.0
    assert found[("tensorgate_queue_depth", (("model", "digits"),))] == 0.0
    assert found[("tensorgate_inflight_requests", ())] == 0.0
    # millisecond-scale buckets, and no GPU series on a host without a GPU
    buckets = {
        dict(labels)["le"]
        for (name, labels) in found
        if name == "tensorgate_request_duration_seconds_bucket"
    }
    assert {"0.001", "0.005", "0.01"} <= buckets
    assert not any(name.startswith("tensorgate_gpu") for name, _ in found)


def test_expired_requests_count_as_rejected(tmp_path: Path, grpc_core: str) -> None:
    metrics_port = free_port()
    env = {"TENSORGATE_FAULT_LATENCY_MS": "50"}
    with (
        serve(
            EXAMPLE_MODELS,
            "--models",
            "digits",
            "--metrics-port",
            str(metrics_port),
            env=env,
            log_dir=tmp_path,
            core=grpc_core,
        ) as process,
        Client(process.target) as client,
    ):
        with pytest.raises(InferenceServerError) as error:
            client.infer(
                "digits", {"pixels": np.zeros((1, 64), np.float32)}, parameters={"timeout": 10_000}
            )
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        found = samples(scrape(metrics_port))
    assert found[("tensorgate_rejected_total", (("model", "digits"), ("reason", "deadline")))] == 1
    assert (
        found[
            (
                "tensorgate_requests_total",
                (("model", "digits"), ("status", "DEADLINE_EXCEEDED"), ("version", "1")),
            )
        ]
        == 1
    )


def test_latency_histogram_links_to_the_trace(
    server: tuple[ServerProcess, int], receiver: OtlpReceiver
) -> None:
    process, metrics_port = server
    with Client(process.target) as client:
        client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})
    text = scrape(metrics_port, openmetrics=True)
    exemplars = [
        line
        for line in text.splitlines()
        if line.startswith("tensorgate_request_duration_seconds_bucket") and "trace_id" in line
    ]
    assert exemplars, "no exemplar on the request histogram"
    trace_id = exemplars[0].split('trace_id="')[1].split('"')[0]
    spans = receiver.wait_for(lambda spans: any(s.trace_id == trace_id for s in spans))
    names = {s.name for s in spans if s.trace_id == trace_id}
    assert "inference.GRPCInferenceService/ModelInfer" in names


def test_unknown_model_names_do_not_create_series(server: tuple[ServerProcess, int]) -> None:
    process, metrics_port = server
    with Client(process.target) as client:
        for name in ("nope-1", "nope-2"):
            with pytest.raises(InferenceServerError):
                client.infer(name, {"pixels": np.zeros((1, 64), np.float32)})
    found = samples(scrape(metrics_port))
    models = {
        dict(labels).get("model") for (name, labels) in found if name == "tensorgate_requests_total"
    }
    assert "nope-1" not in models and "nope-2" not in models
    unknown = (
        "tensorgate_requests_total",
        (("model", "_unknown"), ("status", "NOT_FOUND"), ("version", "")),
    )
    assert found[unknown] == 2


def test_unknown_versions_of_a_known_model_do_not_create_series(
    server: tuple[ServerProcess, int],
) -> None:
    process, metrics_port = server
    with Client(process.target) as client:
        for version in ("77", "not-a-version"):
            with pytest.raises(InferenceServerError):
                client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)}, version=version)
    found = samples(scrape(metrics_port))
    versions = {
        dict(labels).get("version")
        for (name, labels) in found
        if name == "tensorgate_requests_total" and dict(labels).get("model") == "digits"
    }
    assert not versions & {"77", "not-a-version"}
    assert "_unknown" in versions
