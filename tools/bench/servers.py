"""The processes a benchmark starts: ``tensorgate serve``, the echo and thin servers, on free ports.

Each runs until its ``with`` block ends; waits are bounded, and a server that fails to come up is
reported with the tail of its log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tensorgate.server.workers import stop_processes, worker_command
from tensorgate.tools.probes import is_serving

log = logging.getLogger(__name__)

#: how long a server may take to load its models and report SERVING
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_CHARS = 3000


@dataclass(frozen=True)
class RunningServer:
    """A server process this benchmark started; its CPU is read from /proc for ``pid``."""

    pid: int
    target: str
    log_path: Path


def serve_command(repository: Path, model: str, port: int, server_args: Sequence[str]) -> list[str]:
    """A worker serving ``model`` alone on ``port``, without metrics or a drain pause, unless
    ``server_args`` say otherwise (later flags win in argparse)."""
    argv, _ = worker_command(
        [
            "--model-repository", str(repository),
            "--port", str(port),
            "--metrics-port", "0",
            "--drain-seconds", "0",
            "--grace-seconds", "2",
            "--models", model,
            *server_args,
        ]
    )  # fmt: skip
    return argv


def echo_command(port: int, threads: int, max_concurrent_rpcs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tensorgate.tools.bench.echo",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--max-concurrent-rpcs",
        str(max_concurrent_rpcs),
    ]


def thin_command(
    core: str, model: str, port: int, threads: int, max_concurrent_rpcs: int
) -> list[str]:
    """The thin server (tools/bench/thin.py) on ``core``; its settings travel in the environment."""
    return [
        sys.executable,
        "-m",
        "tensorgate.tools.bench.thin",
        "--core",
        core,
        "--model",
        model,
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--max-concurrent-rpcs",
        str(max_concurrent_rpcs),
    ]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


@contextmanager
def running(
    command: Sequence[str], port: int, log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[RunningServer]:
    """Starts ``command`` (a gRPC server on ``port``), waits until it is SERVING, stops it after;
    ``env`` is added to this process's environment."""
    environment = {**os.environ, **env} if env is not None else None
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
        )
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not is_serving(target):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{command[2]} exited with code {process.returncode}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{target} not SERVING after {START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}"
                )
            time.sleep(0.1)
        yield RunningServer(process.pid, target, log_path)
    finally:
        stop_processes([process], STOP_TIMEOUT_S)
