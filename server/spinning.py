"""Whether ONNX Runtime's pool threads may busy-wait (spin) between ops, decided per model.

Spinning makes a multi-threaded run start its parallel work sooner, at the price of pool threads
burning a core while they wait: CPU that the request path needs, and that a CPU-based autoscaler
reads as load. So it is off unless it measures faster for the model: at load time the model runs
on its warmup inputs with each setting, alternately, each run followed by ``GAP_S`` of Python work
as a request's own handling would be (that is when idle pool threads spin), and spinning is kept
only when a run's wall time plus the process's CPU time is at least ``MARGIN`` lower with it. A model's
``session.allow_spinning`` in config.toml forces the setting; one intra-op thread has no pool to
spin, and a server or model without warmup (or without inputs to make up) does not measure: all
leave spinning off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorgate.server.inputs import can_randomize, rows
from tensorgate.server.model_config import SessionConfig, WarmupConfig
from tensorgate.server.repository import ModelLocation
from tensorgate.server.sessions import create_session
from tensorgate.server.settings import Settings
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.warmup import representative_inputs

log = logging.getLogger(__name__)

#: spinning must lower wall + CPU time per run by this share to be kept
MARGIN = 0.05
#: alternations of the two settings, and the time each setting runs in each
ROUNDS = 4
ROUND_S = 0.05
#: runs before measuring, per session (arena growth, first-run costs)
PRIMING_RUNS = 3
#: Python work after each run, like the request path's around a run
GAP_S = 200e-6
#: how long ONNX Runtime's pool threads keep spinning after a run (measured: 20-40 ms), waited
#: before the session without spinning is measured so that it is not charged for them
SETTLE_S = 0.06


@dataclass(frozen=True)
class RunCost:
    """Mean wall and CPU (all threads of the process) time of one run, in seconds."""

    wall_s: float
    cpu_s: float

    @property
    def total_s(self) -> float:
        return self.wall_s + self.cpu_s


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run_cost(
    session: Any, feed: Mapping[str, np.ndarray], seconds: float
) -> tuple[float, float, int]:
    """Runs ``session``, each run followed by ``GAP_S`` of Python work, for ``seconds`` (at least
    once): (wall s, CPU s, runs)."""
    runs = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    end = started + seconds
    while runs == 0 or time.perf_counter() < end:
        session.run(None, dict(feed))
        _busy(GAP_S)
        runs += 1
    return time.perf_counter() - started, time.process_time() - cpu_started, runs


def measure(sessions: Mapping[bool, Any], feed: Mapping[str, np.ndarray]) -> dict[bool, RunCost]:
    """The cost of a run (and its gap) without spinning (False) and with it (True), alternately."""
    totals = {flag: [0.0, 0.0, 0] for flag in (False, True)}
    for session in sessions.values():
        for _ in range(PRIMING_RUNS):
            session.run(None, dict(feed))
    for _ in range(ROUNDS):
        for flag in (False, True):
            if not flag:
                time.sleep(SETTLE_S)
            wall, cpu, runs = run_cost(sessions[flag], feed, ROUND_S)
            totals[flag][0] += wall
            totals[flag][1] += cpu
            totals[flag][2] += runs
    return {flag: RunCost(w / n, c / n) for flag, (w, c, n) in totals.items()}


def faster_with_spinning(costs: Mapping[bool, RunCost]) -> bool:
    """True when spinning lowers a run's wall + CPU time by at least ``MARGIN``."""
    return costs[True].total_s <= (1.0 - MARGIN) * costs[False].total_s


def decide_spinning(
    path: Path,
    model_name: str,
    config: SessionConfig,
    intra_op_threads: int,
    inter_op_threads: int,
    warmup: WarmupConfig | None,
    model_dir: Path | None = None,
) -> SessionConfig:
    """``config`` with ``allow_spinning`` decided (see the module docstring); logs the decision.

    ``warmup`` None: the server does not warm models up, so nothing is measured.
    """
    if config.allow_spinning is not None:
        log.info(
            "model %s: ONNX Runtime spinning %s (config.toml)",
            model_name,
            _word(config.allow_spinning),
        )
        return config
    intra = config.intra_op_threads if config.intra_op_threads is not None else intra_op_threads
    why = None
    if intra == 1:
        why = "one intra-op thread"
    elif warmup is None or warmup.count == 0:
        why = "warmup off, not measured"
    if why is None:
        return _measured(
            path, model_name, config, intra_op_threads, inter_op_threads, warmup, model_dir
        )
    log.info("model %s: ONNX Runtime spinning off (%s)", model_name, why)
    return config.model_copy(update={"allow_spinning": False})


def _measured(
    path: Path,
    model_name: str,
    config: SessionConfig,
    intra_op_threads: int,
    inter_op_threads: int,
    warmup: WarmupConfig,
    model_dir: Path | None,
) -> SessionConfig:
    sessions = {
        flag: create_session(
            path,
            model_name,
            config.model_copy(update={"allow_spinning": flag}),
            intra_op_threads,
            inter_op_threads,
        )
        for flag in (False, True)
    }
    inputs = [TensorSpec.from_ort(node) for node in sessions[False].get_inputs()]
    if warmup.file is None and not all(can_randomize(spec) for spec in inputs):
        log.info("model %s: ONNX Runtime spinning off (no inputs to measure with)", model_name)
        return config.model_copy(update={"allow_spinning": False})
    # the largest warmup batch: what a loaded server runs most of its time
    feed = max(representative_inputs(inputs, warmup, model_dir), key=rows)
    costs = measure(sessions, feed)
    chosen = faster_with_spinning(costs)
    log.info(
        "model %s: ONNX Runtime spinning %s (measured per run at batch %d: on %.0f µs wall + %.0f µs "
        "CPU, off %.0f µs wall + %.0f µs CPU; kept only when %.0f%% cheaper)",
        model_name,
        _word(chosen),
        rows(feed),
        costs[True].wall_s * 1e6,
        costs[True].cpu_s * 1e6,
        costs[False].wall_s * 1e6,
        costs[False].cpu_s * 1e6,
        MARGIN * 100,
    )
    return config.model_copy(update={"allow_spinning": chosen})


def _word(flag: bool) -> str:
    return "on" if flag else "off"


def session_config_for(location: ModelLocation, settings: Settings) -> SessionConfig:
    """The model's [session] table with spinning decided, as the server (and the benchmark's thin
    servers, for the same session options) create its sessions."""
    return decide_spinning(
        location.path,
        location.name,
        location.config.session,
        settings.worker_intra_op_threads,
        settings.inter_op_threads,
        location.config.warmup if settings.warmup else None,
        location.path.parent.parent,
    )
