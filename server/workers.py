"""``serve --workers N``: N worker processes on consecutive ports, each with its own metrics port.

A worker that dies is reported in the log; ``tensorgate up`` is the supervisor that restarts them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from tensorgate.server.settings import ENV_PREFIX, Settings
from tensorgate.server.signals import install_stop_signals

log = logging.getLogger(__name__)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as TENSORGATE_* variables, so a child process reads the same configuration."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def worker_command(
    flags: Sequence[str] = (),
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one worker process: ``python -m tensorgate.server``.

    The one place that builds them, for ``serve --workers``, ``tensorgate up``, the benchmark and the
    tests. The child's ``TENSORGATE_*`` variables come from ``settings`` when given (replacing the
    parent's), then ``env``; ``flags`` win over both, as on the command line.
    """
    environment = dict(os.environ if base_env is None else base_env)
    if settings is not None:
        environment = {k: v for k, v in environment.items() if not k.startswith(ENV_PREFIX)}
        environment.update(settings_environment(settings))
    environment.update(env or {})
    return [sys.executable, "-m", "tensorgate.server", *flags], environment


def worker_settings(settings: Settings, index: int, port_base: int) -> Settings:
    """Worker ``index``: gRPC on port_base + index, metrics on metrics_port + index."""
    metrics = settings.metrics_port + index if settings.metrics_port else 0
    return settings.model_copy(
        update={
            "port": port_base + index,
            "metrics_port": metrics,
            "workers": 1,
            "host_workers": settings.workers,
        }
    )


def spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    argv, env = worker_command(settings=settings)
    return subprocess.Popen(argv, env=env)


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM to all (each tensorgate server drains itself), then SIGKILL whatever is left after
    ``timeout``. Used for workers, and by the benchmark and the tests for the servers they start."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("pid %d did not stop in %.0fs; killing it", process.pid, timeout)
            process.kill()
            process.wait()


def run_workers(settings: Settings) -> int:
    stop = install_stop_signals()
    processes = [
        spawn_worker(worker_settings(settings, i, settings.port)) for i in range(settings.workers)
    ]
    log.info(
        "started %d workers on ports %d-%d",
        len(processes),
        settings.port,
        settings.port + settings.workers - 1,
    )
    reported: set[int] = set()
    while not stop.wait(0.5):
        for index, process in enumerate(processes):
            code = process.poll()
            if code is not None and index not in reported:
                reported.add(index)
                log.error(
                    "worker %d (pid %d, port %d) exited with code %d",
                    index,
                    process.pid,
                    settings.port + index,
                    code,
                )
        if len(reported) == len(processes):
            return 1
    stop_processes(processes, settings.drain_seconds + settings.grace_seconds + 5.0)
    return 1 if reported else 0
