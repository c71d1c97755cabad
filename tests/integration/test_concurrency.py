"""Concurrency through a real server: many callers, streams that pipeline, a bounded queue."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import numpy as np

from tensorgate.client import AsyncClient, Client, InferenceServerError, RetryPolicy
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.support.processes import EXAMPLE_MODELS, serve


def execution_count(target: str, model: str) -> tuple[int, int]:
    """(model runs, requests served) from ModelStatistics."""
    with grpc.insecure_channel(target) as channel:
        stats = (
            GRPCInferenceServiceStub(channel)
            .ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=10)
            .model_stats[0]
        )
    return stats.execution_count, stats.inference_stats.success.count


def test_256_concurrent_callers_all_succeed_and_get_their_own_rows(
    tmp_path: Path, grpc_core: str
) -> None:
    x_test = np.random.default_rng(0).uniform(0, 16, (1024, 64)).astype(np.float32)
    with serve(EXAMPLE_MODELS, "--models", "digits", log_dir=tmp_path, core=grpc_core) as server:
        with Client(server.target) as client:
            expected = np.concatenate(
                [
                    client.infer("digits", {"pixels": x_test[i : i + 64]})["label"]
                    for i in range(0, 1024, 64)
                ]
            )

        async def run() -> list[int]:
            async with AsyncClient(server.target, timeout=120) as client:
                limit = asyncio.Semaphore(256)

                async def one(i: int) -> int:
                    async with limit:
                        out = await client.infer(
                            "digits", {"pixels": x_test[i : i + 1]}, outputs=["label"]
                        )
                        return int(out["label"][0])

                return await asyncio.gather(*(one(i) for i in range(1024)))

        labels = asyncio.run(run())
        runs, served = execution_count(server.target, "digits")
    assert labels == expected.tolist()
    assert served >= 1024 + 16
    assert runs < served, "concurrent requests were never merged into batches"


def test_a_stream_is_pipelined_not_served_one_at_a_time(tmp_path: Path, grpc_core: str) -> None:
    # the batcher waits up to 100 ms for a fuller batch: a stream served one request at a time gives
    # 64 runs of one; a pipelined stream has its requests meet in the queue and share a few runs
    repository = tmp_path / "models"
    shutil.copytree(EXAMPLE_MODELS / "digits", repository / "digits")
    (repository / "digits" / "config.toml").write_text(
        "max_batch_size = 64\n[dynamic_batching]\nmax_queue_delay_us = 100000\n"
    )
    with serve(repository, log_dir=tmp_path, core=grpc_core) as server:
        pixels = np.zeros((1, 64), np.float32)

        async def run() -> list:
            async with AsyncClient(server.target, timeout=60) as client:
                return [r async for r in client.stream_infer("digits", [{"pixels": pixels}] * 64)]

        results = asyncio.run(run())
        runs, served = execution_count(server.target, "digits")
    assert len(results) == 64 and not any(r.error for r in results)
    assert served == 64
    assert runs <= 8, f"{runs} runs for 64 stream requests: the stream was not pipelined"


def test_beyond_the_queue_bound_the_only_failure_is_resource_exhausted(
    tmp_path: Path, grpc_core: str
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(EXAMPLE_MODELS / "cnn", repository / "cnn")
    (repository / "cnn" / "config.toml").write_text(
        "max_batch_size = 1\n[dynamic_batching]\nmax_queue_size = 4\n[warmup]\ncount = 1\n"
    )
    image = np.zeros((1, 3, 32, 32), np.float32)
    with serve(repository, log_dir=tmp_path, core=grpc_core) as server:

        async def run() -> list[object]:
            async with AsyncClient(
                server.target, timeout=60, retry=RetryPolicy(max_attempts=1)
            ) as client:

                async def one() -> object:
                    try:
                        return await client.infer("cnn", {"image": image})
                    except InferenceServerError as error:
                        return error

                return await asyncio.gather(*(one() for _ in range(64)))

        outcomes = asyncio.run(run())
    errors = [o for o in outcomes if isinstance(o, InferenceServerError)]
    assert errors, "64 concurrent requests never filled a queue of 4"
    assert {e.code for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "queue" in errors[0].message
    assert len(errors) < 64
