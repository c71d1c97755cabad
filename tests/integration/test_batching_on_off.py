"""Batching on against off on the overhead-bound mlp at concurrency 64, side by side in one run of
`tensorgate bench`: batches form on a small model, and batching never costs throughput.

Issue 10's target (at least 1.5x) is a benchmark, recorded in docs/benchmarks.md: on the shared
two-core machine the ratio measured over a few seconds ranged from 0.9 to 1.6 from run to run, so
the test asserts what holds whatever the neighbours do, with a generous margin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.processes import EXAMPLE_MODELS, REPO_ROOT

#: batching on keeps at least this share of batching off's throughput
MARGIN = 0.8


def test_batching_on_serves_mlp_faster_than_off_at_concurrency_64(
    tmp_path: Path, grpc_core: str
) -> None:
    # ONNX Runtime's threads spin after each run by default: on two shared cores that takes the
    # CPU the request path needs, whatever the batching (the default changes with issue 10 item 3)
    shutil.copytree(EXAMPLE_MODELS / "mlp", tmp_path / "models" / "mlp")
    (tmp_path / "models" / "mlp" / "config.toml").write_text(
        "max_batch_size = 64\n[session]\nallow_spinning = false\n"
    )
    scenario = tmp_path / "on_off.toml"
    scenario.write_text(
        f"""
model = "mlp"
model_repository = "{tmp_path / "models"}"
serve = true
concurrency = [64]
duration = 3
warmup = 1

[[servers]]
label = "on"
server_args = ["--no-cache", "--grpc-core", "{grpc_core}"]

[[servers]]
label = "off"
batching = false
server_args = ["--no-cache", "--grpc-core", "{grpc_core}"]
"""
    )
    out = tmp_path / "on_off.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorgate.cli.main",
            "bench",
            "--scenario",
            str(scenario),
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    runs = {run["target"]: run for run in json.loads(out.read_text())["runs"]}
    on, off = runs["on"], runs["off"]
    assert on["error_count"] == off["error_count"] == 0
    assert on["mean_batch_size"] > 1.2, f"mean batch {on['mean_batch_size']:.2f}: none formed"
    ratio = on["throughput_rps"] / off["throughput_rps"]
    assert ratio >= MARGIN, (
        f"batching on {on['throughput_rps']:.0f} req/s, off {off['throughput_rps']:.0f}"
    )
