"""The client's retries are gRPC's own (service config): bounded attempts, one deadline, a retry
budget per channel; and the per-call headers, token and own-channel options. Real gRPC on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import grpc.aio
import pytest

from tensorgate.client import AsyncClient, Client, InferenceServerError, RetryPolicy
from tensorgate.proto import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


@dataclass
class Recorder:
    """A server whose ServerLive fails UNAVAILABLE (or answers) and remembers every attempt."""

    fail: bool = True
    attempts: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def live(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> object:
        with self.lock:
            self.attempts += 1
            self.metadata.append(dict(context.invocation_metadata()))
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return pb.ServerLiveResponse(live=True)


@pytest.fixture()
def recorder() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    handler = grpc.unary_unary_rpc_method_handler(
        recorder.live,
        request_deserializer=pb.ServerLiveRequest.FromString,
        response_serializer=pb.ServerLiveResponse.SerializeToString,
    )
    server = grpc.server(ThreadPoolExecutor(4, thread_name_prefix="test-retries"))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ServerLive": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield recorder, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def test_unavailable_is_retried_up_to_max_attempts(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    with (
        Client(target, retry=policy, timeout=10) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert error.value.message == "try again"
    assert server.attempts == 3


def test_the_deadline_bounds_attempts_and_pauses(recorder: tuple[Recorder, str]) -> None:
    """A backoff longer than the deadline: one attempt, then DEADLINE_EXCEEDED, not a late retry."""
    server, target = recorder
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=5.0, max_backoff_s=5.0)
    with (
        Client(target, retry=policy, timeout=0.5) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert server.attempts <= 2  # at most one retry fits, only if its jittered pause is short


def test_a_failing_server_exhausts_the_retry_budget(recorder: tuple[Recorder, str]) -> None:
    """Ten failing calls with 3 attempts each would be 30; the channel's budget stops retrying."""
    server, target = recorder
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001)
    with Client(target, retry=policy, timeout=10) as client:
        for _ in range(10):
            with pytest.raises(InferenceServerError):
                client.live()
        assert server.attempts <= 16
        before = server.attempts
        with pytest.raises(InferenceServerError):
            client.live()
        assert server.attempts == before + 1  # no retries left


def test_no_retry_is_one_attempt(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder
    with (
        Client(target, retry=RetryPolicy(max_attempts=1), timeout=5) as client,
        pytest.raises(InferenceServerError),
    ):
        client.live()
    assert server.attempts == 1


def test_max_attempts_is_what_grpc_allows() -> None:
    with pytest.raises(ValueError, match=r"max_attempts must be 1\.\.5"):
        RetryPolicy(max_attempts=6)


def test_token_and_per_call_headers_reach_the_server(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder
    server.fail = False
    with Client(target, token="t0ken", metadata=[("x-team", "a")], timeout=5) as client:
        assert client.live(headers={"X-Request-Tag": "one"}) is True
        assert client.live() is True
    first, second = server.metadata
    assert first["authorization"] == "Bearer t0ken"
    assert first["x-team"] == "a" and first["x-request-tag"] == "one"
    assert "x-request-tag" not in second


def test_a_channel_of_ones_own_is_used_and_left_open(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder
    server.fail = False
    with grpc.insecure_channel(target) as channel:
        with Client(channel=channel, token="abc") as client:
            assert client.live() is True
        # still open after the client closed
        grpc.channel_ready_future(channel).result(timeout=5)
    assert server.metadata[0]["authorization"] == "Bearer abc"


def test_async_client_retries_and_sends_headers(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder

    async def run() -> None:
        policy = RetryPolicy(max_attempts=2, initial_backoff_s=0.01)
        async with AsyncClient(target, retry=policy, token="tk", timeout=10) as client:
            with pytest.raises(InferenceServerError):
                await client.live(headers={"x-call": "1"})

    asyncio.run(run())
    assert server.attempts == 2
    assert server.metadata[0]["authorization"] == "Bearer tk"
    assert server.metadata[0]["x-call"] == "1"


def test_async_client_on_a_channel_of_ones_own(recorder: tuple[Recorder, str]) -> None:
    server, target = recorder
    server.fail = False

    async def run() -> tuple[bool, bool]:
        async with grpc.aio.insecure_channel(target) as channel:
            async with AsyncClient(channel=channel, token="own") as client:
                first = await client.live()
            # closing the client left the channel open: a second client can use it
            async with AsyncClient(channel=channel, token="own") as again:
                return first, await again.live()

    assert asyncio.run(run()) == (True, True)
    assert [m["authorization"] for m in server.metadata] == ["Bearer own", "Bearer own"]
