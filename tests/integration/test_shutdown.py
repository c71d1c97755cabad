"""SIGTERM under load: health goes NOT_SERVING, the server keeps answering while it drains, nothing fails."""

from __future__ import annotations

import signal
import threading
import urllib.request
from pathlib import Path

import numpy as np
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from tensorgate.client import Client, InferenceServerError
from tests.support.processes import EXAMPLE_MODELS, free_port, health_status, serve
from tests.support.waiting import wait_until


def test_sigterm_under_load_drains_with_no_failed_request(tmp_path: Path, grpc_core: str) -> None:
    with serve(
        EXAMPLE_MODELS, "--models", "digits", drain_seconds=1.5, log_dir=tmp_path, core=grpc_core
    ) as server:
        pixels = np.zeros((1, 64), np.float32)
        done = threading.Event()
        successes: list[int] = [0] * 4
        failures: list[Exception] = []
        statuses: list[int | None] = []

        def load(index: int) -> None:
            # each caller stops as soon as the drain is over (health NOT_SERVING seen, then answers
            # keep coming until the listener closes): what a balancer-routed client would see
            with Client(server.target, timeout=10) as client:
                while not done.is_set():
                    try:
                        client.infer("digits", {"pixels": pixels})
                        successes[index] += 1
                    except InferenceServerError as error:
                        failures.append(error)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(successes) > 0, 10, "the load to reach the server")
        before = sum(successes)
        server.process.send_signal(signal.SIGTERM)

        def not_serving() -> bool:
            status = health_status(server.target)
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                statuses.append(status)
            return bool(statuses)

        # well inside the 1.5 s drain period: health turns, and answers keep coming
        wait_until(not_serving, 1.0, "health NOT_SERVING once SIGTERM arrived")
        during_start = sum(successes)
        wait_until(lambda: sum(successes) > during_start, 1.0, "an answer during the drain")
        during_end = sum(successes)
        done.set()  # stop sending before the drain period ends, as a balancer would have
        for thread in threads:
            thread.join(15)
        assert server.process.wait(20) == 0
    assert before > 0
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert during_end > during_start, "the server stopped answering during the drain period"
    assert failures == []
    assert "draining" in server.log() and "stopped" in server.log()


def inflight(metrics_port: int) -> float:
    """The worker's tensorgate_inflight_requests gauge."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "tensorgate_inflight_requests":
            return family.samples[0].value
    raise AssertionError("tensorgate_inflight_requests is not exposed")


def test_requests_in_flight_finish_within_the_grace_period(tmp_path: Path, grpc_core: str) -> None:
    # a 300 ms injected latency: requests accepted just before SIGTERM must still complete
    env = {"TENSORGATE_FAULT_LATENCY_MS": "300"}
    metrics_port = free_port()
    with serve(
        EXAMPLE_MODELS,
        "--models",
        "digits",
        "--metrics-port",
        str(metrics_port),
        env=env,
        drain_seconds=0.0,
        log_dir=tmp_path,
        core=grpc_core,
    ) as server:
        results: list[object] = []

        def call() -> None:
            with Client(server.target, timeout=10) as client:
                try:
                    results.append(
                        client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})
                    )
                except InferenceServerError as error:
                    results.append(error)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: inflight(metrics_port) == 3, 10, "the three requests in flight")
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        assert server.process.wait(20) == 0
    assert len(results) == 3
    assert all(isinstance(r, dict) for r in results), results
