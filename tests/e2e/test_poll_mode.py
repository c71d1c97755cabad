"""`--model-control-mode poll` behind Envoy: every worker of `tensorgate up` picks up a new version
by itself, so the whole fleet serves it, with no failed call while it changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np

from tensorgate.client import Client, InferenceServerError
from tests.e2e.balancer_fixtures import START_TIMEOUT, Load, tensorgate_up, wait_for
from tests.support.models import add_one_model, save
from tests.support.processes import EXAMPLE_MODELS

X = np.zeros((1, 4), np.float32)


def answer_of(target: str) -> float:
    with Client(target, timeout=20) as client:
        return float(client.infer("add", {"x": X})["y"][0, 0])


def test_poll_mode_brings_a_new_version_to_every_worker_behind_envoy(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(EXAMPLE_MODELS / "digits", repository / "digits")
    save(add_one_model(1.0), repository, "add", version=1)
    args = ("--model-control-mode", "poll", "--repository-poll-seconds", "0.5")
    with (
        tensorgate_up(tmp_path, workers=2, repository=repository, args=args) as up,
        Load(up.target, callers=2) as load,
    ):
        workers = [f"127.0.0.1:{up.layout.worker_port(i)}" for i in range(2)]
        assert [answer_of(w) for w in workers] == [1.0, 1.0]
        with Client(up.target, timeout=20) as client:
            try:  # a Load through the front door is refused: the repository decides
                client.load("add")
            except InferenceServerError as error:
                assert error.code == grpc.StatusCode.FAILED_PRECONDITION
                assert "'poll'" in error.message
            else:
                raise AssertionError("RepositoryModelLoad was accepted in poll mode")
        save(add_one_model(2.0), repository, "add", version=2)
        for worker in workers:
            wait_for(lambda w=worker: answer_of(w) == 2.0, START_TIMEOUT, f"{worker} on version 2")
        assert {answer_of(up.target) for _ in range(20)} == {2.0}
        load.wait_for_calls(100)
    assert not load.errors, load.errors
    assert up.log().count("model add version 2 ready") == 2
