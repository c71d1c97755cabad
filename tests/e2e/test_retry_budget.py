"""How the client's retries and Envoy's combine (docs/security.md, "Retries"): behind Envoy, one call
that keeps failing UNAVAILABLE makes at most max_attempts x (num_retries + 1) attempts, and a client
that leaves retrying to Envoy makes at most num_retries + 1. Real workers failing every call."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tensorgate.client import Client, InferenceServerError, RetryPolicy
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.e2e.balancer_fixtures import PIXELS, envoy, workers

ENVOY_RETRIES = 2  # BalancerSettings.num_retries, the default


def failed_attempts(targets: list[str]) -> int:
    """ModelInfer calls of ``digits`` that failed, summed over the workers."""
    total = 0
    for target in targets:
        with grpc.insecure_channel(target) as channel:
            stats = GRPCInferenceServiceStub(channel).ModelStatistics(
                pb.ModelStatisticsRequest(name="digits"), timeout=10
            )
        total += stats.model_stats[0].inference_stats.fail.count
    return total


def attempts_of_one_call(front_door: str, targets: list[str], policy: RetryPolicy) -> int:
    before = failed_attempts(targets)
    with (
        Client(front_door, retry=policy, timeout=20) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.infer("digits", {"pixels": PIXELS})
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    return failed_attempts(targets) - before


def test_client_and_envoy_retries_multiply_within_one_bound(tmp_path: Path) -> None:
    failing = {"TENSORGATE_FAULT_ERROR_RATE": "1.0"}
    with workers(tmp_path, [failing, failing]) as servers:
        targets = [s.target for s in servers]
        # outlier ejection off: this test counts attempts, and must not see a host ejected midway
        with envoy(tmp_path, [s.port for s in servers], outlier_consecutive_5xx=1000,
                   outlier_consecutive_gateway_failure=1000) as (front_door, _admin):  # fmt: skip
            envoy_only = attempts_of_one_call(front_door, targets, RetryPolicy(max_attempts=1))
            both = attempts_of_one_call(
                front_door, targets, RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
            )
    assert envoy_only == ENVOY_RETRIES + 1
    assert both == 3 * (ENVOY_RETRIES + 1)
