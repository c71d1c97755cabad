"""Runs a scenario: the limit, each server configuration, then the echo and thin servers; one
report dict.

Servers run one at a time, never beside each other or beside the limit measurement, so that each
has the machine to itself (with the load generator).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc

from tensorgate.client import Client
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.server.repository import ModelRepository
from tensorgate.server.sessions import create_session
from tensorgate.server.settings import Settings
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.workers import settings_environment
from tensorgate.tools.bench import servers
from tensorgate.tools.bench.cpu import tree_cpu_seconds
from tensorgate.tools.bench.limit import measure_limit
from tensorgate.tools.bench.load import GeneratorPool, LoadSpec, Window
from tensorgate.tools.bench.payload import PayloadSpec
from tensorgate.tools.bench.progress import BenchProgress
from tensorgate.tools.bench.repository import repository_without_batching
from tensorgate.tools.bench.scenario import Scenario, ServerConfig
from tensorgate.tools.bench.summary import ECHO, THIN, Run, add_ratios, run_record
from tensorgate.tools.probes import free_port

log = logging.getLogger(__name__)

#: rough cost of starting a server and connecting, for the progress bar's plan only
SERVER_START_S = 5.0
SAMPLER_JOIN_S = 10.0


def echo_pool_size(settings: Settings) -> tuple[int, int]:
    """The real server's handler pool size and concurrent RPC limit, for the echo server."""
    from tensorgate.server.app import handler_threads

    threads = handler_threads(settings, ModelRepository(settings.model_repository))
    return threads, settings.max_concurrent_rpcs or threads


def load_specs(plan: Scenario, targets: Sequence[str], payload: PayloadSpec) -> list[LoadSpec]:
    common: dict[str, Any] = {
        "targets": tuple(targets),
        "payload": payload,
        "warmup_s": plan.warmup,
        "duration_s": plan.duration,
        "channels": plan.channels,
        "timeout_s": plan.timeout,
        "max_in_flight": plan.max_in_flight,
    }
    closed = [LoadSpec(mode="closed", concurrency=c, **common) for c in plan.concurrency]
    return closed + [LoadSpec(mode="open", rate=r, **common) for r in plan.rates]


def planned_seconds(plan: Scenario) -> float:
    """What the progress bar expects the whole benchmark to take."""
    per_target = (len(plan.concurrency) + len(plan.rates)) * (plan.warmup + plan.duration)
    targets = (len(plan.servers) if plan.serve else 0) + int(bool(plan.targets)) + int(plan.echo)
    targets += len(THIN) if plan.thin else 0
    total = targets * per_target
    if plan.limit:
        total += len(plan.limit_batches) * plan.limit_seconds
    return total


def describe(spec: LoadSpec) -> str:
    return f"c={spec.concurrency}" if spec.mode == "closed" else f"rate={spec.rate:g}/s"


def payload_from_server(plan: Scenario, target: str) -> PayloadSpec:
    """The model's inputs as the server describes them (ModelMetadata)."""
    with Client(target, timeout=10.0) as client:
        model = client.metadata(plan.model, plan.version or None)
    inputs = tuple(TensorSpec(t.name, t.datatype, t.shape) for t in model.inputs)
    return _payload(plan, inputs)


def payload_from_repository(plan: Scenario) -> PayloadSpec:
    """The model's inputs as its ONNX graph declares them, for runs with no server to ask."""
    assert plan.model_repository is not None  # the scenario checks it
    location = ModelRepository(plan.model_repository).locate(plan.model, plan.version or None)
    settings = plan.servers[0].settings(plan.model_repository)
    session = create_session(
        location.path,
        location.name,
        location.config.session,
        settings.worker_intra_op_threads,
        settings.inter_op_threads,
    )
    return _payload(plan, tuple(TensorSpec.from_ort(node) for node in session.get_inputs()))


def _payload(plan: Scenario, inputs: tuple[TensorSpec, ...]) -> PayloadSpec:
    return PayloadSpec(plan.model, inputs, plan.version, plan.repeat_ratio, plan.repeat_pool)


def _inference_counts(targets: Sequence[str], model: str) -> tuple[int, int] | None:
    """(samples inferred, model runs) of ``model`` summed over the targets; None where a target
    does not report statistics (the echo server)."""
    samples = runs = 0
    for target in targets:
        with grpc.insecure_channel(target) as channel:
            try:
                reply = GRPCInferenceServiceStub(channel).ModelStatistics(
                    pb.ModelStatisticsRequest(name=model), timeout=2.0
                )
            except grpc.RpcError:
                return None
        for stats in reply.model_stats:
            samples += stats.inference_count
            runs += stats.execution_count
    return samples, runs


class WindowSampler:
    """Reads the servers' CPU and inference counters at the start and the end of the window."""

    def __init__(self, pids: Sequence[int], targets: Sequence[str], model: str) -> None:
        self._pids = list(pids)
        self._targets = list(targets)
        self._model = model
        self._samples: list[tuple[float | None, tuple[int, int] | None]] = []
        self._thread: threading.Thread | None = None

    def start(self, window: Window) -> None:
        self._thread = threading.Thread(
            target=self._sample, args=(window,), name="bench-sampler", daemon=True
        )
        self._thread.start()

    def _sample(self, window: Window) -> None:
        for when in (window.start, window.end):
            time.sleep(max(0.0, when - time.monotonic()))
            cpu = tree_cpu_seconds(self._pids) if self._pids else None
            counts = _inference_counts(self._targets, self._model) if self._targets else None
            self._samples.append((cpu, counts))

    def result(self) -> tuple[float | None, float | None]:
        """(server CPU seconds in the window, mean batch size formed in it), None if unknown."""
        if self._thread is not None:
            self._thread.join(SAMPLER_JOIN_S)
        if len(self._samples) != 2:
            return None, None
        (cpu0, counts0), (cpu1, counts1) = self._samples
        cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        batch = None
        if counts0 is not None and counts1 is not None and counts1[1] > counts0[1]:
            batch = (counts1[0] - counts0[0]) / (counts1[1] - counts0[1])
        return cpu, batch


class Runner:
    """Runs one scenario with a pool of generator processes kept across its runs."""

    def __init__(self, plan: Scenario, pool: GeneratorPool, progress: BenchProgress) -> None:
        self.plan = plan
        self.pool = pool
        self.progress = progress
        self.runs: list[Run] = []

    def measure(
        self,
        label: str,
        targets: Sequence[str],
        pids: Sequence[int],
        payload: PayloadSpec,
        grpc_core: str | None = None,
    ) -> None:
        """Every load of the plan against ``targets``, appended to ``runs``; ``grpc_core`` is the
        servers' gRPC core where known, for the comparison with the thin server on the same."""
        for spec in load_specs(self.plan, targets, payload):
            sampler = WindowSampler(pids, targets, self.plan.model)
            seconds = spec.warmup_s + spec.duration_s
            with self.progress.phase(f"{label} {describe(spec)}", seconds) as tick:
                result = self.pool.run(spec, on_window=sampler.start, on_tick=tick)
            cpu, batch = sampler.result()
            record = run_record(label, spec, result, cpu, batch)
            record["server_pids"] = list(pids)
            record["grpc_core"] = grpc_core
            self.runs.append(record)

    def limit(self) -> dict[str, Any]:
        plan = self.plan
        assert plan.model_repository is not None  # the scenario checks it
        location = ModelRepository(plan.model_repository).locate(plan.model, plan.version or None)
        settings = plan.servers[0].settings(plan.model_repository)
        seconds = len(plan.limit_batches) * plan.limit_seconds
        with self.progress.phase("in-process limit", seconds) as tick:
            batches = measure_limit(
                location, settings, plan.limit_batches, plan.limit_seconds, lambda _: tick()
            )
        best = max(batches, key=lambda b: b.samples_per_s)
        return {
            "batches": [b.as_dict() for b in batches],
            "best": best.as_dict(),
            "max_batch_size": location.config.max_batch_size,
            "intra_op_threads": settings.worker_intra_op_threads,
            "inter_op_threads": settings.inter_op_threads,
        }

    @contextmanager
    def serving(self, server: ServerConfig, logs: Path) -> Iterator[servers.RunningServer]:
        """``tensorgate serve`` for one server configuration, on a free port."""
        assert self.plan.model_repository is not None  # the scenario checks it
        port = free_port()
        with self.progress.phase(f"starting {server.label}", 0.0), self._repository(server) as repo:
            command = servers.serve_command(repo, self.plan.model, port, server.server_args)
            with servers.running(command, port, logs / f"{server.label}.log") as running:
                yield running

    @contextmanager
    def _repository(self, server: ServerConfig) -> Iterator[Path]:
        assert self.plan.model_repository is not None
        if server.batching:
            yield self.plan.model_repository
        else:
            with repository_without_batching(self.plan.model_repository, self.plan.model) as repo:
                yield repo

    @contextmanager
    def echo(self, logs: Path) -> Iterator[servers.RunningServer]:
        settings = self.plan.servers[0].settings(self.plan.model_repository)
        threads, max_rpcs = echo_pool_size(settings)
        port = free_port()
        command = servers.echo_command(port, threads, max_rpcs)
        with servers.running(command, port, logs / "echo.log") as running:
            yield running

    @contextmanager
    def thin(self, core: str, logs: Path) -> Iterator[servers.RunningServer]:
        """The thin server on ``core``, with the session settings of the first server config."""
        settings = self.plan.servers[0].settings(self.plan.model_repository)
        threads, max_rpcs = echo_pool_size(settings)
        port = free_port()
        command = servers.thin_command(core, self.plan.model, port, threads, max_rpcs)
        env = settings_environment(settings.model_copy(update={"port": port, "metrics_port": 0}))
        with (
            self.progress.phase(f"starting {THIN[core]}", 0.0),
            servers.running(command, port, logs / f"{THIN[core]}.log", env) as running,
        ):
            yield running


def host_description() -> dict[str, Any]:
    """The machine and versions, and its load, so a result on a busy machine says so."""
    versions = {}
    for package in ("onnxruntime", "onnxruntime-gpu", "grpcio", "numpy", "protobuf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": list(os.getloadavg()),
    }


def run_scenario(plan: Scenario, show_progress: bool = True) -> dict[str, Any]:
    """Runs everything the plan asks for; returns the report (see docs/benchmarks.md)."""
    report: dict[str, Any] = {
        "name": plan.title,
        "model": plan.model,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": host_description(),
        "plan": plan.model_dump(mode="json"),
        "limit": None,
        "runs": [],
    }
    loaded = bool(plan.serve or plan.targets or plan.echo or plan.thin)
    with (
        BenchProgress(planned_seconds(plan), show_progress) as progress,
        GeneratorPool(plan.processes if loaded else 0) as pool,
        tempfile.TemporaryDirectory(prefix="tensorgate-bench-logs-") as logs,
    ):
        runner = Runner(plan, pool, progress)
        if plan.limit:
            report["limit"] = runner.limit()
        payload: PayloadSpec | None = None
        if plan.serve:
            for server in plan.servers:
                with runner.serving(server, Path(logs)) as running:
                    payload = payload or payload_from_server(plan, running.target)
                    runner.measure(
                        server.label, [running.target], [running.pid], payload, server.grpc_core
                    )
        elif plan.targets:
            payload = payload_from_server(plan, plan.targets[0])
            runner.measure("target", plan.targets, plan.server_pids, payload)
        if plan.echo:
            payload = payload or payload_from_repository(plan)
            with runner.echo(Path(logs)) as running:
                runner.measure(ECHO, [running.target], [running.pid], payload, "threads")
        if plan.thin:
            payload = payload or payload_from_repository(plan)
            for core, label in THIN.items():
                with runner.thin(core, Path(logs)) as running:
                    runner.measure(label, [running.target], [running.pid], payload, core)
    report["runs"] = runner.runs
    report["host"]["load_average_after"] = list(os.getloadavg())
    best = report["limit"]["best"]["samples_per_s"] if report["limit"] else None
    add_ratios(runner.runs, best)
    return report
