"""A broken model harms only itself, health tells the truth, and model control modes do what they say:
real `tensorgate serve` processes on repositories built here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from tensorgate.client import Client, InferenceServerError
from tests.support.models import add_one_model, save
from tests.support.processes import REPO_ROOT, serve
from tests.support.waiting import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
X = np.zeros((1, 4), np.float32)

#: model name -> (what is wrong with it, what its reason must say)
BROKEN = {
    "bad_key": ("max_batch_sise = 8\n", "config.toml: unknown key 'max_batch_sise' (did you mean 'max_batch_size'?)"),
    "bad_toml": ("max_batch_size = = 8\n", "config.toml: TOML syntax error: Invalid value (at line 1, column 18)"),
    "bad_provider": (
        '[session]\nproviders = ["CUDAExecutionProvidr"]\n',
        "config.toml: key 'session.providers': 'CUDAExecutionProvidr' is not an ONNX Runtime "
        "execution provider (did you mean 'CUDAExecutionProvider'?)",
    ),
    "bad_platform": (
        'platform = "tensorflow_savedmodel"\n',
        "config.toml: key 'platform': Input should be 'onnxruntime_onnx'; received 'tensorflow_savedmodel'",
    ),
    "bad_onnx": (None, "1/model.onnx: expected an ONNX model that ONNX Runtime can load"),
}  # fmt: skip


def broken_repository(root: Path) -> Path:
    """``add`` (good) next to one model per kind of breakage."""
    save(add_one_model(1.0), root, "add")
    for name, (config, _reason) in BROKEN.items():
        path = save(add_one_model(1.0), root, name, config=config)
        if config is None:
            path.write_bytes(b"this is not a protobuf" * 10)
    return root


def repair(root: Path) -> None:
    for name in BROKEN:
        (root / name / "config.toml").unlink(missing_ok=True)
        save(add_one_model(1.0), root, name)


def health(target: str, service: str = "") -> int | None:
    from tensorgate.tools.probes import health_status

    return health_status(target, service)


def test_a_broken_model_harms_only_itself_and_loads_once_fixed(
    tmp_path: Path, grpc_core: str
) -> None:
    root = broken_repository(tmp_path / "models")
    args = ("--model-control-mode", "explicit")
    with (
        serve(root, *args, log_dir=tmp_path, wait=False, core=grpc_core) as server,
        Client(server.target, timeout=20) as client,
    ):
        # every model tried (the broken ones may be tried after "add" is already serving)
        wait_until(lambda: " model(s) on " in server.log(), 60, "the worker to finish loading")
        assert health(server.target, "add") == SERVING
        assert server.process.poll() is None, "the worker keeps running"
        assert client.infer("add", {"x": X})["y"].tolist() == [[1.0] * 4]
        states = {m.name: m for m in client.models()}
        for name, (_config, reason) in BROKEN.items():
            assert states[name].state == "UNAVAILABLE", states[name]
            assert str(root / name) in states[name].reason
            assert reason in states[name].reason, states[name].reason
            assert "\n" not in states[name].reason
            with pytest.raises(InferenceServerError) as error:
                client.infer(name, {"x": X})
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
            assert reason in error.value.message
        # strict readiness: a model failed, so the server is not ready
        assert not client.ready()
        assert health(server.target) == NOT_SERVING
        # `tensorgate models` shows the reasons
        listing = subprocess.run(
            [sys.executable, "-m", "tensorgate.cli.main", "models", "--target", server.target],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stderr
        for _name, (_config, reason) in BROKEN.items():
            assert reason in listing.stdout, listing.stdout
        # the log has one line per broken model, no traceback
        log = server.log()
        for name, (_config, reason) in BROKEN.items():
            assert f"model {name} failed to load: " in log and reason in log
        assert "Traceback" not in log
        # fixed on disk and loaded again: served, and the server is ready
        repair(root)
        for name in BROKEN:
            client.load(name)
            assert client.infer(name, {"x": X})["y"].tolist() == [[1.0] * 4]
        assert client.ready()
        assert health(server.target) == SERVING


def test_relaxed_readiness_serves_when_at_least_one_model_is_ready(tmp_path: Path) -> None:
    root = broken_repository(tmp_path / "models")
    with (
        serve(root, "--no-strict-readiness", log_dir=tmp_path) as server,
        Client(server.target, timeout=20) as client,
    ):
        assert client.ready()
        assert health(server.target) == SERVING
        assert health(server.target, "bad_key") == NOT_SERVING


def test_a_repository_whose_only_model_fails_is_never_ready(tmp_path: Path) -> None:
    root = tmp_path / "models"
    save(add_one_model(1.0), root, "only", config="max_batch_sise = 8\n")
    for flags in ((), ("--no-strict-readiness",)):
        with (
            serve(root, *flags, log_dir=tmp_path, wait=False) as server,
            Client(server.target, timeout=20) as client,
        ):
            wait_until(
                lambda s=server: "serving 1 model(s)" in s.log(), 60, "the worker to finish loading"
            )
            assert not client.ready()
            assert health(server.target) == NOT_SERVING


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_repository_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, make: str
) -> None:
    root = tmp_path / "models"
    if make == "empty":
        (root / "not-a-model").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    for command in (
        [sys.executable, "-m", "tensorgate.server", "--model-repository", str(root), "--port", "0"],
        [sys.executable, "-m", "tensorgate.cli.main", "serve", "--model-repository", str(root)],
        [sys.executable, "-m", "tensorgate.cli.main", "up", "--model-repository", str(root)],
    ):
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(root) in lines[0]
        assert ("does not exist" if make == "missing" else "holds no model") in lines[0]


def test_load_and_unload_are_refused_in_the_default_mode(tmp_path: Path, grpc_core: str) -> None:
    root = tmp_path / "models"
    save(add_one_model(1.0), root, "add")
    with (
        serve(root, log_dir=tmp_path, core=grpc_core) as server,
        Client(server.target, timeout=20) as client,
    ):
        for call in (client.load, client.unload):
            with pytest.raises(InferenceServerError) as error:
                call("add")
            assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "the model control mode is 'none'" in error.value.message
            assert "--model-control-mode explicit" in error.value.message
        assert client.model_ready("add")


def test_poll_mode_follows_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "models"
    save(add_one_model(1.0), root, "add")
    save(add_one_model(5.0), root, "gone")
    args = ("--model-control-mode", "poll", "--repository-poll-seconds", "0.2")
    with (
        serve(root, *args, log_dir=tmp_path) as server,
        Client(server.target, timeout=20) as client,
    ):
        assert client.infer("add", {"x": X})["y"].tolist() == [[1.0] * 4]
        with pytest.raises(InferenceServerError) as error:
            client.load("add")
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
        save(add_one_model(2.0), root, "add", version=2)
        save(add_one_model(3.0), root, "new")
        (root / "gone" / "1" / "model.onnx").unlink()
        wait_until(
            lambda: client.infer("add", {"x": X})["y"].tolist() == [[2.0] * 4], 30, "add version 2"
        )
        wait_until(lambda: client.model_ready("new"), 30, "the new model")
        wait_until(lambda: "gone" not in {m.name for m in client.models()}, 30, "gone removed")
        with pytest.raises(InferenceServerError) as gone:
            client.infer("gone", {"x": X})
        assert gone.value.code == grpc.StatusCode.NOT_FOUND
        assert client.ready()
