"""SIGTERM under load: health goes NOT_SERVING, the server keeps answering while it drains, nothing fails."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
from grpc_health.v1 import health_pb2

from tensorgate.client import Client, InferenceServerError
from tests.support.processes import EXAMPLE_MODELS, health_status, serve


def test_sigterm_under_load_drains_with_no_failed_request(tmp_path: Path) -> None:
    with serve(EXAMPLE_MODELS, "--models", "digits", drain_seconds=1.5, log_dir=tmp_path) as server:
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
        time.sleep(0.5)
        before = sum(successes)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        statuses.append(health_status(server.target))
        during_start = sum(successes)
        time.sleep(0.8)
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


def test_requests_in_flight_finish_within_the_grace_period(tmp_path: Path) -> None:
    # a 300 ms injected latency: requests accepted just before SIGTERM must still complete
    env = {"TENSORGATE_FAULT_LATENCY_MS": "300"}
    with serve(
        EXAMPLE_MODELS, "--models", "digits", env=env, drain_seconds=0.0, log_dir=tmp_path
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
        time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        assert server.process.wait(20) == 0
    assert len(results) == 3
    assert all(isinstance(r, dict) for r in results), results
