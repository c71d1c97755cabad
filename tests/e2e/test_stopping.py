"""Stopping drains, however it is asked: Ctrl-C on `make run` (SIGINT to the terminal's process
group), SIGTERM to that whole group, and SIGTERM or SIGINT to `tensorgate up` itself, each under
load, with no accepted request failing.

A call that no worker accepted (the front door already closed, or no worker left to connect to)
fails fast with UNAVAILABLE and a connection error: a caller retries it elsewhere. Every other
failure is an accepted request that was lost, and there must be none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.balancer_fixtures import (
    DRAIN_SECONDS,
    START_TIMEOUT,
    Load,
    alive,
    free_port_block,
    stack_environment,
    tensorgate_up,
    wait_for,
)
from tests.support.processes import REPO_ROOT, free_port

#: what a call that never reached a worker reads like (connection refused, nothing to route to)
NOT_ACCEPTED = (
    "failed to connect",
    "Connection refused",
    "connection refused",
    "no healthy upstream",
    "reset reason: remote connection failure",
    "reset reason: connection failure",
)


def accepted_failures(load: Load) -> dict[str, int]:
    return {
        error: count
        for error, count in load.errors.items()
        if not (error.startswith("UNAVAILABLE") and any(text in error for text in NOT_ACCEPTED))
    }


@contextmanager
def make_run(log_dir: Path, workers: int = 2) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``make run`` in a session of its own, as a terminal runs it; yields it and its front door."""
    port = free_port_block(workers + 1)
    up_args = f"--admin-port {free_port()} --metrics-port 0 --workers {workers}"
    out_path = log_dir / "make.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}", f"UP_ARGS={up_args}"],
            stdout=out, stderr=subprocess.STDOUT, env=stack_environment(), cwd=REPO_ROOT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: (
                "tensorgate is up" in out_path.read_text(errors="replace")
                or process.poll() is not None
            ),
            START_TIMEOUT,
            "make run to bring the stack up",
        )
        assert process.poll() is None, out_path.read_text(errors="replace")[-3000:]
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_process_group_of_make_run_drains_under_load(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with make_run(tmp_path) as (process, target), Load(target, callers=4) as load:
        load.wait_for_calls(200)
        os.killpg(process.pid, sig)  # what the terminal does on Ctrl-C: the whole group
        status = process.wait(DRAIN_SECONDS + 60)
    log = (tmp_path / "make.out").read_text(errors="replace")
    assert status == -sig, log[-3000:]  # make, once its child is done, dies of the signal
    assert "tensorgate.balancer.supervisor: stopped" in log, log[-3000:]
    assert "second stop signal" not in log, log[-3000:]
    assert log.count("tensorgate.server.app: stopped") == 2, log[-3000:]
    assert accepted_failures(load) == {}, load.errors
    assert load.ok >= 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_to_tensorgate_up_drains_under_load(tmp_path: Path, sig: signal.Signals) -> None:
    with tensorgate_up(tmp_path, workers=2) as up, Load(up.target, callers=4) as load:
        load.wait_for_calls(200)
        pids = up.pids()
        up.process.send_signal(sig)
        status = up.process.wait(DRAIN_SECONDS + 60)
    assert status == 0, up.log()[-3000:]
    assert accepted_failures(load) == {}, load.errors
    assert [pid for pid in pids.values() if alive(pid)] == []


def test_the_same_signal_twice_counts_once_and_a_later_second_ctrl_c_kills_at_once(
    tmp_path: Path,
) -> None:
    slow_drain = {"TENSORGATE_DRAIN_SECONDS": "20"}
    with tensorgate_up(tmp_path, workers=1, env=slow_drain) as up:
        pids = up.pids()
        os.killpg(up.process.pid, signal.SIGINT)  # the terminal's copy
        up.process.send_signal(signal.SIGINT)  # and make's, a moment later: one Ctrl-C
        first = time.monotonic()
        up.wait_for_log("Envoy no longer routes to any worker", timeout=30)
        wait_for(lambda: time.monotonic() - first > 1.2, 5, "more than a second to pass")
        assert "second stop signal" not in up.log()
        assert all(alive(pid) for pid in pids.values()), "still draining"
        up.process.send_signal(signal.SIGINT)  # a second Ctrl-C: kill at once
        status = up.process.wait(30)
        log = up.log()
    assert status == 1
    assert "second stop signal: killing every process now" in log
    assert [pid for pid in pids.values() if alive(pid)] == []
