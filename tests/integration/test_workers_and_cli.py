"""`serve --workers N` and the client-side sub-commands, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np

from tensorgate.client import Client
from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT, free_port, serve, wait_until_serving
from tests.support.waiting import wait_until


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorgate.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def test_infer_and_models_commands(tmp_path: Path) -> None:
    with serve(EXAMPLE_MODELS, "--models", "digits", log_dir=tmp_path) as server:
        pixels = tmp_path / "pixels.npy"
        np.save(pixels, np.zeros((2, 64), np.float32))
        result = run_cli(
            "infer",
            "digits",
            "--input",
            f"pixels={pixels}",
            "--output",
            "label",
            "--target",
            server.target,
        )
        assert result.returncode == 0, result.stderr
        assert "label int64 [2]" in result.stdout
        listing = run_cli("models", "--target", server.target)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line.split()[2] for line in listing.stdout.splitlines()[1:]}
        assert rows == {"cnn": "UNAVAILABLE", "digits": "READY", "mlp": "UNAVAILABLE"}
        bad = run_cli("infer", "digits", "--input", f"wrong={pixels}", "--target", server.target)
        assert bad.returncode == 1
        assert "INVALID_ARGUMENT" in bad.stderr and "no input 'wrong'" in bad.stderr


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_workers_each_serve_their_own_ports_and_a_crash_is_reported(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    while metrics_port + 1 == port or port + 1 == metrics_port:
        metrics_port = free_port()
    log_path = tmp_path / "workers.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    env["TENSORGATE_CACHE_ENABLED"] = "false"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorgate.cli.main",
                "serve",
                "--workers",
                "2",
                "--models",
                "digits",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--drain-seconds",
                "0.2",
                "--model-repository",
                str(EXAMPLE_MODELS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )
    try:
        for index in range(2):
            target = f"127.0.0.1:{port + index}"
            wait_until_serving(target, process)
            with Client(target) as client:
                assert client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})[
                    "label"
                ].shape == (1,)
            assert "tensorgate_requests_total" in metrics_text(metrics_port + index)
        worker_pids = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(worker_pids) == 2
        os.kill(int(worker_pids[1]), signal.SIGKILL)
        wait_until(
            lambda: "exited with code" in log_path.read_text(), 10, "the crash reported", 0.2
        )
        assert "exited with code -9" in log_path.read_text()
        with Client(f"127.0.0.1:{port}") as client:  # the other worker keeps serving
            assert client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})[
                "label"
            ].shape == (1,)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 1  # a worker had died: the parent says so in its exit code
