"""Helpers of the balancer's end-to-end tests: `tensorgate up`, hand-built stacks, a load loop.

Everything is real: `tensorgate serve` workers, the Envoy binary, gRPC on 127.0.0.1 free ports.
Every wait is bounded and every process started here is stopped when its block ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorgate.balancer.admin import AdminUnavailable, EnvoyAdmin
from tensorgate.balancer.envoy import envoy_command
from tensorgate.balancer.envoy_config import write_bootstrap
from tensorgate.balancer.ports import PortLayout, busy_ports
from tensorgate.balancer.processes import Child
from tensorgate.balancer.settings import BalancerSettings, Endpoint
from tensorgate.client import Client, InferenceServerError, RetryPolicy
from tests.support.processes import (
    EXAMPLE_MODELS,
    REPO_ROOT,
    ServerProcess,
    free_port,
    serve,
    wait_until_serving,
)
from tests.support.waiting import wait_until

#: What the workers of these tests use: 2 s of drain (more than Envoy's 1 s health-check period).
DRAIN_SECONDS = 2.0
START_TIMEOUT = 90.0
#: callers see every error: no retry in the client, so Envoy alone must hide failures
NO_RETRY = RetryPolicy(max_attempts=1)
PIXELS = np.random.default_rng(0).random((1, 64), dtype=np.float32)


def free_port_block(count: int) -> int:
    """A first port such that it and the ``count - 1`` after it are all free."""
    rng = np.random.default_rng()
    for _ in range(100):
        first = int(rng.integers(20_000, 45_000))
        if not busy_ports(list(range(first, first + count))):
            return first
    raise RuntimeError(f"no block of {count} free ports found")


def stack_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's TENSORGATE_* settings, cache off, a short drain."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    env["TENSORGATE_CACHE_ENABLED"] = "false"
    env["TENSORGATE_DRAIN_SECONDS"] = str(DRAIN_SECONDS)
    env["TENSORGATE_GRACE_SECONDS"] = "5"
    env.update(extra or {})
    return env


def wait_for(condition: object, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``condition()`` until true; return the seconds it took, or fail the test with ``what``."""
    assert callable(condition)

    def holds() -> bool:
        with contextlib.suppress(AdminUnavailable):
            return bool(condition())
        return False

    return wait_until(holds, timeout, what, interval)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- tensorgate up


@dataclass
class UpProcess:
    """A running ``tensorgate up``; its stdout and stderr (the supervisor's log) go to files."""

    process: subprocess.Popen[bytes]
    layout: PortLayout
    stdout_path: Path
    stderr_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.layout.port}"

    @property
    def admin(self) -> EnvoyAdmin:
        return EnvoyAdmin(self.layout.admin_port)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The latest pid of each child (``worker 0`` …, ``envoy``), from the supervisor's log."""
        return {
            name: int(pid)
            for name, pid in re.findall(r"(worker \d+|envoy) started: pid (\d+)", self.log())
        }

    def wait_for_log(self, text: str, timeout: float, after: int = 0) -> int:
        """Wait until ``text`` appears in the log after offset ``after``; return where it ends."""
        found: list[int] = []

        def appeared() -> bool:
            index = self.log().find(text, after)
            if index >= 0:
                found.append(index + len(text))
            return index >= 0

        wait_for(appeared, timeout, f"{text!r} in the log of tensorgate up:\n{self.log()[-3000:]}")
        return found[0]


@contextmanager
def tensorgate_up(
    log_dir: Path,
    workers: int,
    env: Mapping[str, str] | None = None,
    repository: Path = EXAMPLE_MODELS,
    args: Sequence[str] = (),
) -> Iterator[UpProcess]:
    """``tensorgate up`` on free ports, once it says it is up; stopped (SIGTERM) when the block ends."""
    layout = PortLayout(
        port=free_port_block(workers + 1),
        admin_port=free_port(),
        metrics_port=free_port_block(workers),
        workers=workers,
    )
    command = [
        sys.executable, "-m", "tensorgate.cli.main", "up",
        "--port", str(layout.port),
        "--admin-port", str(layout.admin_port),
        "--metrics-port", str(layout.metrics_port),
        "--workers", str(workers),
        "--model-repository", str(repository),
        *args,
    ]  # fmt: skip
    stdout_path, stderr_path = log_dir / "up.out", log_dir / "up.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env=stack_environment(env), cwd=REPO_ROOT,
            start_new_session=True,
        )  # fmt: skip
    up = UpProcess(process, layout, stdout_path, stderr_path)
    try:
        wait_for(
            lambda: "tensorgate is up" in up.stdout() or process.poll() is not None,
            START_TIMEOUT,
            "tensorgate up to start",
        )
        assert process.poll() is None, f"tensorgate up exited early:\n{up.log()[-3000:]}"
        yield up
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in up.pids().values():  # a safety net: nothing the stack started may outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# -- hand-built stacks: workers with their own settings, and Envoys in front of them


@contextmanager
def workers(log_dir: Path, envs: Sequence[Mapping[str, str]]) -> Iterator[list[ServerProcess]]:
    """One `tensorgate serve` per entry of ``envs`` (its extra environment), started together."""
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                serve(
                    EXAMPLE_MODELS,
                    env=dict(env),
                    log_dir=log_dir,
                    drain_seconds=DRAIN_SECONDS,
                    wait=False,
                )
            )
            for env in envs
        ]
        for server in servers:
            wait_until_serving(server.target, server.process, START_TIMEOUT)
        yield servers


@contextmanager
def envoy(
    config_dir: Path, ports: Sequence[int], **settings: object
) -> Iterator[tuple[str, EnvoyAdmin]]:
    """Envoy in front of the workers on ``ports``; yields its front door and admin once it routes
    to every one of them."""
    balancer = BalancerSettings(
        endpoints=[Endpoint(port=p) for p in ports],
        port=free_port(),
        admin_port=free_port(),
        **settings,
    )
    config = write_bootstrap(balancer, config_dir / f"envoy-{balancer.port}.json")
    child = Child("envoy", envoy_command(config))
    child.start()
    admin = EnvoyAdmin(balancer.admin_port)
    try:
        wait_for(lambda: admin.healthy_ports() >= set(ports), 30, f"Envoy routing to {ports}")
        yield f"127.0.0.1:{balancer.port}", admin
    finally:
        child.stop(signal.SIGTERM, 10)


def requests_by_port(admin: EnvoyAdmin) -> dict[int, int]:
    """How many requests Envoy sent to each worker (retries included)."""
    return {h.port: h.rq_total for h in admin.hosts()}


# -- load


class Load:
    """``callers`` threads calling ``digits`` through ``target`` until stopped, with no client
    retry: every error counted here is one a caller would have seen."""

    def __init__(self, target: str, callers: int = 4, timeout: float = 10.0) -> None:
        self.client = Client(target, timeout=timeout, retry=NO_RETRY)
        self.callers = callers
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _call_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.infer("digits", {"pixels": PIXELS})
            except InferenceServerError as error:
                with self._lock:
                    self.errors[f"{error.code.name}: {error.message}"] += 1
            else:
                with self._lock:
                    self.ok += 1

    def wait_for_calls(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` more calls have succeeded."""
        target = self.ok + count
        wait_for(lambda: self.ok >= target, timeout, f"{count} more successful calls")

    def __enter__(self) -> Load:
        for i in range(self.callers):
            thread = threading.Thread(
                target=self._call_until_stopped, name=f"load-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.client.close()


def run_calls(target: str, count: int, callers: int) -> Counter[str]:
    """``count`` calls from ``callers`` threads; returns the errors (empty when all succeeded)."""
    client = Client(target, timeout=10.0, retry=NO_RETRY)
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    remaining = [count]

    def call() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                client.infer("digits", {"pixels": PIXELS})
            except InferenceServerError as error:
                with lock:
                    errors[f"{error.code.name}: {error.message}"] += 1

    threads = [threading.Thread(target=call, name=f"calls-{i}") for i in range(callers)]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.join(timeout=120)
        client.close()
    return errors
