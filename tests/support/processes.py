"""Starting and stopping real tensorgate processes in tests: free ports, bounded waits, no leftovers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpc_health.v1 import health_pb2

from tensorgate.server.workers import stop_processes, worker_command
from tensorgate.tools.probes import free_port, health_status
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"


def wait_until_serving(
    target: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60.0
) -> None:
    def serving() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before serving")
        return health_status(target) == health_pb2.HealthCheckResponse.SERVING

    wait_until(serving, timeout, f"{target} SERVING", interval=0.1)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    stop_processes([process], timeout)
    return process.returncode


class ServerProcess:
    """A running ``tensorgate serve``; ``target`` is its host:port."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(
    repository: Path = EXAMPLE_MODELS,
    *args: str,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    drain_seconds: float = 0.2,
    wait: bool = True,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Runs ``tensorgate serve`` on a free port until the block ends; the log goes to a file."""
    port = port or free_port()
    parent = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    log_path = Path(log_dir or "/tmp") / f"tensorgate-serve-{port}.log"
    command, environment = worker_command(
        [
            "--model-repository", str(repository),
            "--port", str(port),
            "--metrics-port", "0",
            "--drain-seconds", str(drain_seconds),
            *args,
        ],
        env={"TENSORGATE_CACHE_ENABLED": "false", **(env or {})},
        base_env=parent,
    )  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment, cwd=REPO_ROOT
        )
    server = ServerProcess(process, port, log_path)
    try:
        if wait:
            wait_until_serving(server.target, process)
        yield server
    finally:
        stop_process(process)
