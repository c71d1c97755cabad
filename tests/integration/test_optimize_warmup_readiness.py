"""Readiness stays false until warmup has finished: a real ``tensorgate serve`` with a model whose
warmup takes a second or two, watched from the moment the server answers."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from grpc_health.v1 import health_pb2
from onnx import TensorProto, helper, numpy_helper

from tests.support.processes import health_status, serve
from tests.support.waiting import wait_until

WIDTH, BATCH = 1024, 256
#: Long enough for several polls to see the model loading, short enough for a quick test.
WARMUP_SECONDS = 1.5
POLL_SECONDS = 0.02
DEADLINE_SECONDS = 60.0


def save_slow_model(model_dir: Path) -> None:
    """Three 1024x1024 MatMuls, warmed with enough batch-256 runs to take about WARMUP_SECONDS."""
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x"
    for i in range(3):
        weights.append(numpy_helper.from_array(rng.random((WIDTH, WIDTH), np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
        x = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", WIDTH])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    count = math.ceil(WARMUP_SECONDS / one_run_seconds(model_dir / "1" / "model.onnx"))
    (model_dir / "config.toml").write_text(f"[warmup]\ncount = {count}\nbatch_sizes = [{BATCH}]\n")


def one_run_seconds(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros((BATCH, WIDTH), np.float32)}
    session.run(None, feed)
    started = time.perf_counter()
    session.run(None, feed)
    return time.perf_counter() - started


def test_the_model_turns_ready_only_after_its_warmup_finished(tmp_path: Path) -> None:
    save_slow_model(tmp_path / "models" / "slow")

    with serve(tmp_path / "models", log_dir=tmp_path, wait=False) as server:
        seen_loading = False

        def ready() -> bool:
            nonlocal seen_loading
            # read before asking: warmup may finish between the two, never the other way round
            warming = "warmup finished" not in server.log()
            if health_status(server.target, "slow") == health_pb2.HealthCheckResponse.SERVING:
                return True
            if warming and health_status(server.target) is not None:
                seen_loading = True  # the server answers while the model still warms up
            return False

        wait_until(ready, DEADLINE_SECONDS, "slow to become ready", interval=POLL_SECONDS)

        assert "warmup finished" in server.log(), "ready before its warmup had finished"
        assert seen_loading, "the test never saw the model loading: warmup too short to observe"
