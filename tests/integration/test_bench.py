"""``tensorgate bench`` end to end: real servers, the echo floor and the in-process limit, briefly.

The figures themselves depend on the machine; these tests check what a user reads: the fields of
the JSON, no failed request, positive throughput and CPU, the ratios, the PNG and the table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT, serve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT_S = 180
PERCENTILES = ("p50", "p90", "p99", "p99_9")


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tensorgate.cli.main", "bench", "--no-progress", *args]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO_ROOT
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def assert_healthy_run(run: dict[str, Any]) -> None:
    """A run that measured something and lost nothing."""
    assert run["error_count"] == 0, run["errors"]
    assert run["requests"] > 0
    assert run["throughput_rps"] > 0
    latency = [run["latency_ms"][p] for p in PERCENTILES]
    assert all(v is not None and v > 0 for v in latency)
    assert latency == sorted(latency)
    assert run["generator_cpu_us_per_request"] > 0


def test_serve_echo_and_limit(tmp_path: Path) -> None:
    out = tmp_path / "digits.json"
    completed = bench(
        "--serve",
        "--model-repository",
        str(EXAMPLE_MODELS),
        "--model",
        "digits",
        "--server-arg=--no-cache",
        "--concurrency",
        "1,4",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--echo",
        "--limit",
        "--limit-batches",
        "1,4",
        "--limit-seconds",
        "0.2",
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert report["model"] == "digits"
    assert report["host"]["cpus"] >= 1
    assert [b["batch_size"] for b in report["limit"]["batches"]] == [1, 4]
    assert all(b["samples_per_s"] > 0 for b in report["limit"]["batches"])
    assert report["limit"]["best"]["batch_size"] in (1, 4)

    runs = {(r["target"], r["concurrency"]): r for r in report["runs"]}
    assert set(runs) == {("server", 1), ("server", 4), ("echo", 1), ("echo", 4)}
    for (target, _), run in runs.items():
        assert_healthy_run(run)
        assert run["server_cpu_us_per_request"] > 0
        if target == "server":
            assert run["mean_batch_size"] >= 1
            ratios = run["ratios"]
            assert ratios["throughput_vs_limit"] > 0
            assert ratios["throughput_vs_echo"] > 0
            assert ratios["p50_minus_echo_ms"] is not None
            assert ratios["server_cpu_minus_echo_us"] is not None
        else:
            assert run["mean_batch_size"] is None  # the echo server keeps no statistics

    assert out.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    assert "digits: latency in ms" in completed.stdout
    assert "in-process limit" in completed.stdout


def test_open_loop_against_a_running_server(tmp_path: Path) -> None:
    """An external target: inputs from its metadata, CPU from the pid it is given."""
    out = tmp_path / "open.json"
    with serve(EXAMPLE_MODELS, "--models", "digits", log_dir=tmp_path) as server:
        bench(
            "--target",
            server.target,
            "--server-pid",
            str(server.process.pid),
            "--model",
            "digits",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0.3",
            "--out",
            str(out),
        )
    (run,) = json.loads(out.read_text())["runs"]
    assert (run["target"], run["mode"], run["rate"]) == ("target", "open", 100)
    assert_healthy_run(run)
    assert run["server_cpu_us_per_request"] > 0
    assert run["send_lag_p99_ms"] is not None
    assert out.with_suffix(".png").is_file()
