"""`tensorgate up` as a user runs it: workers die, get restarted, roll, and the stack stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.balancer_fixtures import (
    DRAIN_SECONDS,
    START_TIMEOUT,
    Load,
    alive,
    requests_by_port,
    stack_environment,
    tensorgate_up,
    wait_for,
)
from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT, free_port, health_status

SERVING = 1


def test_a_worker_killed_under_load_costs_no_call_and_comes_back(tmp_path: Path) -> None:
    """Behaviour only: no lost call, the worker is restarted and gets calls again. How fast it is
    back is a benchmark figure (benchmarks/soak.py measures it), not something a busy machine can
    promise to a test; the bound here is generous."""
    with tensorgate_up(tmp_path, workers=3) as up, Load(up.target, callers=4) as load:
        load.wait_for_calls(200)
        victim = up.pids()["worker 1"]
        port = up.layout.worker_port(1)
        os.kill(victim, signal.SIGKILL)

        def back() -> bool:
            pid = up.pids()["worker 1"]
            return (
                pid != victim
                and port in up.admin.healthy_ports()
                and health_status(f"127.0.0.1:{port}") == SERVING
            )

        wait_for(back, START_TIMEOUT, "worker 1 restarted and healthy in Envoy", interval=0.1)
        before = requests_by_port(up.admin)[port]
        load.wait_for_calls(300, timeout=START_TIMEOUT)
        after = requests_by_port(up.admin)[port]
    assert not load.errors, load.errors
    assert after > before, "the restarted worker gets calls again"
    assert f"worker 1 (pid {victim}) exited unexpectedly with status -9" in up.log()


def test_sighup_restarts_every_worker_under_load_without_a_failed_call(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=2) as up, Load(up.target, callers=4) as load:
        load.wait_for_calls(200)
        old = up.pids()
        up.process.send_signal(signal.SIGHUP)
        up.wait_for_log("rolling restart done", timeout=60)
        load.wait_for_calls(200)
        new = up.pids()
    assert not load.errors, load.errors
    for name in ("worker 0", "worker 1"):
        assert new[name] != old[name], f"{name} was restarted"
    assert new["envoy"] == old["envoy"], "Envoy kept running"


def test_sigterm_drains_in_order_exits_0_and_leaves_no_process(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=2) as up:
        pids = up.pids()
        started = time.monotonic()
        up.process.send_signal(signal.SIGTERM)
        status = up.process.wait(timeout=DRAIN_SECONDS + 30)
        took = time.monotonic() - started
        log = up.log()
    assert status == 0, log[-3000:]
    assert took >= DRAIN_SECONDS, "the workers drained before stopping"
    assert [pid for pid in pids.values() if alive(pid)] == []
    # the order: NOT_SERVING, Envoy stops routing, workers stop, then Envoy exits
    steps = [
        "supervisor: draining:",
        "supervisor: Envoy no longer routes to any worker",
        "caught ENVOY_SIGTERM",
        "supervisor: stopped",
    ]
    positions = [log.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), log[-3000:]
    assert log.count("tensorgate.server.app: stopped") == 2
    assert log.rfind("tensorgate.server.app: stopped") < log.find("caught ENVOY_SIGTERM")


def test_ctrl_c_stops_the_stack_the_same_way(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=1) as up:
        pids = up.pids()
        up.process.send_signal(signal.SIGINT)
        status = up.process.wait(timeout=DRAIN_SECONDS + 30)
    assert status == 0
    assert [pid for pid in pids.values() if alive(pid)] == []


def test_workers_and_envoy_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=1) as up:
        pids = up.pids()
        up.process.kill()
        up.process.wait()
        wait_for(
            lambda: not any(alive(pid) for pid in pids.values()),
            DRAIN_SECONDS + 15,
            f"the children {pids} to exit after their parent was killed",
        )


def test_a_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        front = taken.getsockname()[1] - 2  # the second worker's port is the taken one
        command = [
            sys.executable, "-m", "tensorgate.cli.main", "up",
            "--port", str(front), "--admin-port", str(free_port()),
            "--workers", "2", "--metrics-port", "0",
            "--model-repository", str(EXAMPLE_MODELS),
        ]  # fmt: skip
        result = subprocess.run(
            command,
            env=stack_environment(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "ports already in use" in result.stderr
    assert str(front + 2) in result.stderr
