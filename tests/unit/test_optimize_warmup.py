"""Warmup: representative inputs, and runs that finish before the model is declared ready."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tensorgate.server.inputs import InputError
from tensorgate.server.model_config import WarmupConfig
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.warmup import representative_inputs, warm_up

PIXELS = TensorSpec("pixels", "FP32", (-1, 8))


@pytest.fixture
def session(tmp_path: Path) -> ort.InferenceSession:
    """A real model: y = relu(pixels), batch dimension dynamic."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["pixels"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_warmup_runs_count_times_at_each_batch_size_before_returning(
    session: ort.InferenceSession,
) -> None:
    batches: list[int] = []

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        batches.append(len(feed["pixels"]))
        return session.run(None, dict(feed))

    result = warm_up(run, [PIXELS], WarmupConfig(count=2, batch_sizes=[1, 16]))

    assert batches == [1, 1, 16, 16]
    assert result.runs == 4 and result.seconds >= 0


def test_no_runs_when_count_is_zero() -> None:
    calls: list[object] = []

    assert warm_up(calls.append, [PIXELS], WarmupConfig(count=0)).runs == 0
    assert calls == []


def test_random_inputs_are_the_same_on_every_load() -> None:
    config = WarmupConfig(batch_sizes=[4])
    first = representative_inputs([PIXELS], config)
    second = representative_inputs([PIXELS], config)

    assert first[0]["pixels"].shape == (4, 8) and first[0]["pixels"].dtype == np.float32
    np.testing.assert_array_equal(first[0]["pixels"], second[0]["pixels"])


def test_a_fixed_batch_dimension_wins_over_the_configured_sizes() -> None:
    fixed = TensorSpec("image", "FP32", (2, 3))

    feeds = representative_inputs([fixed], WarmupConfig(batch_sizes=[1, 8]))

    assert [f["image"].shape for f in feeds] == [(2, 3)]


def test_inputs_from_a_file_beside_the_model_are_cut_or_repeated(tmp_path: Path) -> None:
    rows = np.arange(24, dtype=np.float32).reshape(3, 8)
    np.save(tmp_path / "warmup.npy", rows)

    feeds = representative_inputs(
        [PIXELS], WarmupConfig(batch_sizes=[2, 5], file="warmup.npy"), tmp_path
    )

    np.testing.assert_array_equal(feeds[0]["pixels"], rows[:2])
    np.testing.assert_array_equal(feeds[1]["pixels"], rows[[0, 1, 2, 0, 1]])


def test_a_missing_warmup_file_fails_the_warmup(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        warm_up(lambda feed: None, [PIXELS], WarmupConfig(file="absent.npy"), tmp_path)


def test_string_inputs_without_a_file_skip_warmup_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[object] = []
    with caplog.at_level(logging.WARNING, logger="tensorgate.server.warmup"):
        result = warm_up(calls.append, [TensorSpec("text", "BYTES", (-1,))], WarmupConfig())

    assert result.runs == 0 and calls == []
    assert "warmup skipped" in caplog.text and "text" in caplog.text
