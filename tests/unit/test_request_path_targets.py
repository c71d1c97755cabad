"""bench/request_path_targets.py: the ratios it reads and the verdicts it gives, on known figures."""

from __future__ import annotations

from typing import Any

import pytest

from tensorgate.tools.bench.summary import add_ratios
from tests.support.scripts import load_script

targets = load_script("request_path_targets")


def run(target: str, c: int, rps: float, p50: float, cpu: float, core: str | None = None) -> dict:
    return {
        "target": target,
        "mode": "closed",
        "concurrency": c,
        "rate": None,
        "throughput_rps": rps,
        "latency_ms": {"p50": p50},
        "server_cpu_us_per_request": cpu,
        "grpc_core": core,
    }


def report(runs: list[dict], limit_samples_per_s: float | None = None) -> dict[str, Any]:
    add_ratios(runs, limit_samples_per_s)  # as run_scenario does
    return {"runs": runs}


def verdicts_of(reports: dict[str, Any]) -> dict[str, tuple[str, bool | None]]:
    return {v.target: (v.measured, v.holds) for v in targets.evaluate(reports)}


def test_ratios_against_thin_limit_and_other_configs_decide_each_target() -> None:
    reports = {
        "digits": report(
            [
                run("server", 1, 900, 1.05, 600, core="threads"),
                run("server", 64, 2200, 30.0, 540, core="threads"),
                run("thin-threads", 1, 1000, 1.0, 520, core="threads"),
                run("thin-threads", 64, 2000, 32.0, 500, core="threads"),
                run("thin-aio", 1, 950, 1.1, 450, core="aio"),
                run("thin-aio", 64, 2400, 26.0, 440, core="aio"),
            ]
        ),
        "mlp": report(
            [
                run("server", 1, 700, 1.3, 700),  # core unknown: the faster thin is the reference
                run("server", 64, 1500, 40.0, 600),
                run("batching-off", 64, 1000, 60.0, 700),
                run("cache-on-all-miss", 64, 1440, 42.0, 620),
                run("thin-threads", 1, 800, 1.1, 560),
                run("thin-threads", 64, 1400, 45.0, 550),
                run("thin-aio", 1, 750, 1.25, 600),
                run("thin-aio", 64, 1300, 48.0, 500),
            ]
        ),
        "cnn": report(
            [
                run("server", 16, 460, 30.0, 4000),
                run("server", 64, 400, 150.0, 4100),
                run("thin-threads", 16, 300, 50.0, 4300),
                run("thin-threads", 64, 320, 190.0, 4300),
                run("thin-aio", 16, 340, 45.0, 4200),
                run("thin-aio", 64, 330, 180.0, 4200),
            ],
            limit_samples_per_s=500.0,
        ),
    }

    assert verdicts_of(reports) == {
        # 2200 / 2400 (aio is the faster thin); CPU 540 / 500 on the same core (threads)
        "digits, c=64: throughput >= 1.0x the faster thin": ("0.92x", False),
        "digits, c=64: server CPU/request <= 1.1x thin (same core)": ("1.08x thin-threads", True),
        "digits, c=1: p50 <= thin + 0.1 ms": ("+0.050 ms against thin-threads", True),
        "digits, c=1: server CPU/request <= 1.2x thin": ("1.15x thin-threads", True),
        # 1500 / 1400; CPU 600 / 550 against the faster thin (threads at c=64)
        "mlp, c=64: throughput >= 1.0x the faster thin": ("1.07x", True),
        "mlp, c=64: server CPU/request <= 1.1x thin (same core)": ("1.09x thin-threads", True),
        "mlp, c=1: p50 <= thin + 0.1 ms": ("+0.200 ms against thin-threads", False),
        "mlp, c=1: server CPU/request <= 1.2x thin": ("1.25x thin-threads", False),
        "cnn, c=16: throughput >= 1.3x the faster thin": ("1.35x", True),  # 460 / 340
        "cnn, c=16: throughput >= 90% of the in-process limit": ("92.0%", True),
        "cnn, c=64: throughput >= 1.3x the faster thin": ("1.21x", False),  # 400 / 330
        "cnn, c=64: throughput >= 90% of the in-process limit": ("80.0%", False),
        "mlp, c=64: batching on >= 1.5x off": ("1.50x", True),
        "mlp, c=64: cache on, all misses >= 95% of cache off": ("96.0%", True),
    }


def test_a_target_without_its_runs_is_not_measured_rather_than_failed() -> None:
    verdicts = targets.evaluate({"mlp": report([run("server", 64, 1500, 40.0, 600)])})
    assert verdicts and all(v.holds is None for v in verdicts)


@pytest.mark.parametrize("core", ["threads", "aio", None])
def test_every_scenario_is_valid_and_cache_off_except_the_cache_run(core: str | None) -> None:
    from tensorgate.tools.bench.scenario import Scenario

    plans = targets.scenarios(targets.Path("examples/models"), targets.Path("/tmp/c"), 1, 0.5, core)
    for model, document in plans.items():
        plan = Scenario.model_validate(document)
        assert plan.thin and plan.serve and plan.model == model
        for server in plan.servers:
            cached = server.label == targets.CACHE_ON
            assert ("--no-cache" in server.server_args) is not cached
            assert server.grpc_core == (core or "aio")
