"""tritonclient.grpc, unchanged, against a tensorgate server (in its own process: see the driver)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.models import make_test_repository
from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT, serve


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory, grpc_core: str) -> dict[str, object]:
    root = tmp_path_factory.mktemp("triton")
    repository = make_test_repository(root / "models", EXAMPLE_MODELS)
    with serve(
        repository, "--model-control-mode", "explicit", log_dir=root, core=grpc_core
    ) as server:
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "support" / "triton_compat_driver.py"),
                server.target,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO_ROOT,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_server_and_model_metadata(seen: dict[str, object]) -> None:
    assert seen["live"] is True and seen["ready"] is True and seen["model_ready"] is True
    assert seen["server_name"] == "tensorgate"
    assert seen["inputs"] == [["pixels", "FP32", [-1, 64]]]
    assert seen["max_batch_size"] == 64


def test_tritonclient_classifies_digits_at_the_stated_accuracy(seen: dict[str, object]) -> None:
    assert seen["accuracy"] >= 0.95  # type: ignore[operator]


def test_several_datatypes_round_trip(seen: dict[str, object]) -> None:
    assert seen["datatypes_equal"] == {
        name: True
        for name in (
            "in_int8",
            "in_uint16",
            "in_int64",
            "in_fp16",
            "in_fp64",
            "in_bool",
            "in_bytes",
        )
    }


def test_stream_inference(seen: dict[str, object]) -> None:
    assert seen["stream_answers"] == 50
    assert seen["stream_agrees"] is True


def test_repository_calls_and_statistics(seen: dict[str, object]) -> None:
    assert seen["index"] == ["add", "all_types", "digits", "failing"]
    assert seen["add_ready_after_unload"] is False
    assert seen["add_ready_after_load"] is True
    assert seen["digits_executions"] >= 10  # type: ignore[operator]


def test_bad_input_reaches_tritonclient_as_invalid_argument(seen: dict[str, object]) -> None:
    status, message = seen["bad_input_error"]  # type: ignore[misc]
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert "input 'pixels': dimension 1 must be 64" in message
