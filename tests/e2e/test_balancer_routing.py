"""Envoy in front of real workers: who gets the calls, what callers see when a worker misbehaves."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tensorgate.balancer.settings import REQUEST_LIMIT_SLACK_BYTES
from tensorgate.client import Client, InferenceServerError
from tests.e2e.balancer_fixtures import (
    NO_RETRY,
    PIXELS,
    envoy,
    requests_by_port,
    run_calls,
    tensorgate_up,
    workers,
)
from tests.support.otlp import otlp_receiver

SLOW_MS = 20
#: enough callers that requests queue on the slow worker, which least-request then avoids
CALLERS = 8
CALLS = 900


def test_every_worker_receives_traffic(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=3) as up:
        assert not run_calls(up.target, count=300, callers=4)
        counts = requests_by_port(up.admin)
    assert set(counts) == set(up.layout.worker_ports())
    assert all(n >= 300 * 0.1 for n in counts.values()), counts


def slow_share(target: str, admin: object, slow_port: int) -> float:
    before = requests_by_port(admin)  # type: ignore[arg-type]
    assert not run_calls(target, count=CALLS, callers=CALLERS)
    after = requests_by_port(admin)  # type: ignore[arg-type]
    sent = {port: after[port] - before.get(port, 0) for port in after}
    return sent[slow_port] / sum(sent.values())


def test_least_request_sends_less_to_a_slow_worker_than_round_robin(tmp_path: Path) -> None:
    """One of 3 workers is 20 ms slower: at most 20% of calls under least-request, ~33% under
    round robin, measured side by side on the same workers."""
    envs = [{"TENSORGATE_FAULT_LATENCY_MS": str(SLOW_MS)}, {}, {}]
    with workers(tmp_path, envs) as servers:
        ports = [s.port for s in servers]
        slow = ports[0]
        with (
            envoy(tmp_path, ports, lb_policy="LEAST_REQUEST") as (lr_target, lr_admin),
            envoy(tmp_path, ports, lb_policy="ROUND_ROBIN") as (rr_target, rr_admin),
        ):
            shares = {"LEAST_REQUEST": [], "ROUND_ROBIN": []}
            for _ in range(2):  # interleaved, so that both see the same machine
                shares["LEAST_REQUEST"].append(slow_share(lr_target, lr_admin, slow))
                shares["ROUND_ROBIN"].append(slow_share(rr_target, rr_admin, slow))
    least_request = sum(shares["LEAST_REQUEST"]) / 2
    round_robin = sum(shares["ROUND_ROBIN"]) / 2
    print(f"slow worker's share: least-request {least_request:.1%}, round robin {round_robin:.1%}")
    assert least_request <= 0.20, shares
    assert 0.28 <= round_robin <= 0.39, shares


def test_a_failing_worker_is_retried_around_and_only_failed_calls_are_logged(
    tmp_path: Path,
) -> None:
    """A worker failing every call with UNAVAILABLE costs callers nothing (Envoy retries on the
    other); a call that really fails (unknown model) is the one line in the access log."""
    access_log = tmp_path / "access.log"
    envs = [{"TENSORGATE_FAULT_ERROR_RATE": "1.0"}, {}]
    with (
        workers(tmp_path, envs) as servers,
        envoy(tmp_path, [s.port for s in servers], access_log_path=str(access_log)) as (target, _),
    ):
        assert not run_calls(target, count=60, callers=2)
        with Client(target, retry=NO_RETRY) as client, pytest.raises(InferenceServerError) as info:
            client.infer("no_such_model", {"pixels": PIXELS})
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [line["method"] for line in lines] == ["/inference.GRPCInferenceService/ModelInfer"]
    assert lines[0]["grpc_status"] == "NotFound"


def test_the_callers_deadline_wins_over_the_route_timeout(tmp_path: Path) -> None:
    """Envoy's route timeout is 0.3 s here, the worker takes 0.8 s: a caller allowing 5 s gets its
    answer, because Envoy honors grpc-timeout."""
    with (
        workers(tmp_path, [{"TENSORGATE_FAULT_LATENCY_MS": "800"}]) as servers,
        envoy(tmp_path, [servers[0].port], request_timeout_seconds=0.3) as (target, _),
        Client(target, retry=NO_RETRY) as client,
    ):
        outputs = client.infer("digits", {"pixels": PIXELS}, timeout=5.0)
    assert outputs["label"].shape == (1,)


def test_envoy_traces_each_call_and_the_worker_continues_its_trace(tmp_path: Path) -> None:
    """With an OTLP collector configured, Envoy sends a span per call and passes W3C traceparent
    on, so the worker's span is its child in the same trace."""
    with otlp_receiver() as collector:
        worker_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_SERVICE_NAME": "worker",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        with (
            workers(tmp_path, [worker_env]) as servers,
            envoy(tmp_path, [servers[0].port], otlp_endpoint=collector.endpoint) as (target, _),
        ):
            assert not run_calls(target, count=5, callers=1)  # Envoy flushes every 5 spans
            spans = collector.wait_for(
                lambda s: {"tensorgate-envoy", "worker"} <= {x.service for x in s}
            )
    envoy_spans = {s.span_id: s for s in spans if s.service == "tensorgate-envoy"}
    children = [s for s in spans if s.service == "worker" and s.parent_span_id in envoy_spans]
    assert children, spans
    assert all(envoy_spans[c.parent_span_id].trace_id == c.trace_id for c in children)


def test_streams_pass_unbuffered_and_an_oversized_call_is_refused_clearly(tmp_path: Path) -> None:
    """The request size limit buffers unary calls only: a stream's next request is sent only once
    the previous one is answered, which a buffering proxy would deadlock. A call far over the
    limit is stopped by Envoy with RESOURCE_EXHAUSTED, as a worker would answer it."""
    mib = 1024 * 1024
    answered: queue.Queue[object] = queue.Queue()

    def one_at_a_time() -> Iterator[dict[str, np.ndarray]]:
        for _ in range(3):
            yield {"pixels": PIXELS}
            answered.get(timeout=10)

    limit = mib + REQUEST_LIMIT_SLACK_BYTES
    with (
        workers(tmp_path, [{"TENSORGATE_MAX_MESSAGE_BYTES": str(mib)}]) as servers,
        envoy(tmp_path, [servers[0].port], max_request_bytes=limit) as (target, _),
        Client(target, retry=NO_RETRY) as client,
    ):
        results = []
        for result in client.stream_infer("digits", one_at_a_time(), timeout=30):
            results.append(result)
            answered.put(result)
        with pytest.raises(InferenceServerError) as too_large:
            client.infer("digits", {"pixels": np.zeros((2 * mib // 256, 64), np.float32)})
    assert [r.error for r in results] == [None, None, None]
    assert too_large.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "balancer's limit" in too_large.value.message
