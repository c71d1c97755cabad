"""No busy-waiting unless it pays, and intra-op threads shared among the workers of a host."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tensorgate.balancer.ports import PortLayout
from tensorgate.balancer.supervisor import StackConfig, Supervisor
from tensorgate.server.model_config import SessionConfig, WarmupConfig
from tensorgate.server.settings import Settings, usable_cores
from tensorgate.server.spinning import RunCost, decide_spinning, faster_with_spinning
from tensorgate.server.workers import worker_settings


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A real model with a dynamic batch: y = relu(x @ w)."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], [0.01] * 64 * 64)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        initializer=[weights],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    return path


def test_spinning_is_kept_only_when_it_is_clearly_cheaper() -> None:
    off = RunCost(wall_s=100e-6, cpu_s=100e-6)
    assert faster_with_spinning({False: off, True: RunCost(80e-6, 100e-6)})  # 10% cheaper
    assert not faster_with_spinning({False: off, True: RunCost(98e-6, 98e-6)})  # 2%: noise
    assert not faster_with_spinning({False: off, True: RunCost(60e-6, 200e-6)})  # burns a core


def test_a_model_config_forces_spinning_either_way(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorgate.server.spinning"):
        for forced in (True, False):
            config = SessionConfig(allow_spinning=forced)
            assert decide_spinning(model, "m", config, 2, 1, WarmupConfig()) is config
    assert "spinning on (config.toml)" in caplog.text
    assert "spinning off (config.toml)" in caplog.text


def test_no_spinning_without_a_pool_or_without_warmup(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorgate.server.spinning"):
        one_thread = decide_spinning(model, "m", SessionConfig(), 1, 1, WarmupConfig())
        no_warmup = decide_spinning(model, "m", SessionConfig(), 2, 1, None)
        no_runs = decide_spinning(model, "m", SessionConfig(), 2, 1, WarmupConfig(count=0))
    assert one_thread.allow_spinning is False and no_warmup.allow_spinning is False
    assert no_runs.allow_spinning is False
    assert "spinning off (one intra-op thread)" in caplog.text
    assert "spinning off (warmup off, not measured)" in caplog.text


def test_unset_spinning_is_measured_on_the_model_and_the_log_says_which(
    model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorgate.server.spinning"):
        decided = decide_spinning(model, "m", SessionConfig(), 2, 1, WarmupConfig(batch_sizes=[4]))

    assert decided.allow_spinning in (True, False)
    word = "on" if decided.allow_spinning else "off"
    assert f"model m: ONNX Runtime spinning {word} (measured per run at batch 4: on " in caplog.text


def test_intra_op_threads_zero_divides_the_cores_among_the_workers_of_a_host() -> None:
    cores = usable_cores()
    assert Settings().worker_intra_op_threads == cores
    assert Settings(host_workers=2).worker_intra_op_threads == max(1, cores // 2)
    assert Settings(host_workers=4 * cores).worker_intra_op_threads == 1
    assert Settings(intra_op_threads=3, host_workers=8).worker_intra_op_threads == 3


def test_the_parent_tells_each_worker_how_many_share_the_host() -> None:
    parent = Settings(workers=3, port=9000)
    assert worker_settings(parent, 1, 9000).host_workers == 3
    assert worker_settings(parent, 1, 9000).workers == 1


def test_a_model_whose_inputs_cannot_be_made_up_is_not_measured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch"])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "strings.onnx"
    onnx.save(proto, str(path))

    with caplog.at_level(logging.INFO, logger="tensorgate.server.spinning"):
        decided = decide_spinning(path, "s", SessionConfig(), 2, 1, WarmupConfig())

    assert decided.allow_spinning is False
    assert "spinning off (no inputs to measure with)" in caplog.text


def test_up_tells_each_worker_how_many_share_the_host(tmp_path: Path) -> None:
    layout = PortLayout(port=20000, admin_port=20100, metrics_port=0, workers=3)
    config = StackConfig.build(tmp_path, layout, Settings())

    envs = [slot.child.env or {} for slot in Supervisor(config).workers]

    assert [env["TENSORGATE_HOST_WORKERS"] for env in envs] == ["3", "3", "3"]
    assert all(env["TENSORGATE_INTRA_OP_THREADS"] == "0" for env in envs)  # 0: the share
