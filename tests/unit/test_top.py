"""``tensorgate top``: the rate and quantile math, and the frame an operator sees.

Workers are real prometheus-client registries served by ``prometheus_client.start_http_server`` on
free ports, with the metric names of issue 6. Envoy's admin API is a stand-in (a stdlib HTTP
server answering the JSON that Envoy 1.40 writes) where the test needs to script ejections; one
test reads a real Envoy, to make sure the parsing matches the real thing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from rich.console import Console

from tensorgate.balancer.admin import EnvoyAdmin
from tensorgate.balancer.envoy_config import write_bootstrap
from tensorgate.balancer.settings import BalancerSettings, Endpoint
from tensorgate.cli import top as top_command
from tensorgate.tools.probes import free_port
from tensorgate.tools.top import Frame, Target, Top, counter_increase, histogram_quantile, render
from tests.support.waiting import wait_until

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
INF = math.inf


# -- the math -----------------------------------------------------------------------------------


def test_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    buckets = [(0.005, 10.0), (0.01, 30.0), (0.025, 40.0), (INF, 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005 + 0.005 * (20 - 10) / 20)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.01 + 0.015 * (39.6 - 30) / 10)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.005 * 4 / 10)  # the first from 0


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 5.0), (0.25, 6.0), (INF, 10.0)]) == 0.25


def test_quantile_is_nan_without_observations_or_inf_bucket() -> None:
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 3.0), (0.2, 4.0)]))
    assert math.isnan(histogram_quantile(0.5, []))


QUANTILE_CASES = [
    (q, buckets)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)
    for buckets in (
        [(0.005, 10.0), (0.01, 30.0), (0.025, 40.0), (INF, 40.0)],
        [(0.001, 0.0), (0.1, 5.0), (0.25, 6.0), (INF, 10.0)],
        [(1.0, 3.0), (2.0, 3.0), (4.0, 7.0), (INF, 7.0)],
    )
]


def test_quantile_matches_prometheus(tmp_path: Path) -> None:
    """promtool evaluates histogram_quantile on the same buckets and must get the same numbers."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not on PATH: apt-get install -y prometheus (Debian's package)")
    series, checks = [], []
    for case, (q, buckets) in enumerate(QUANTILE_CASES):
        for bound, count in buckets:
            le = "+Inf" if math.isinf(bound) else repr(bound)
            series.append({"series": f'b{{case="{case}",le="{le}"}}', "values": f"{count}x1"})
        expected = histogram_quantile(q, buckets)
        expr = f'histogram_quantile({q}, b{{case="{case}"}})'
        if math.isnan(expected):  # NaN equals nothing: ask Prometheus whether its answer is NaN
            expr, expected = f"{expr} != bool {expr}", 1.0
        checks.append(
            {
                "expr": expr,
                "eval_time": "0m",
                "exp_samples": [{"labels": f'{{case="{case}"}}', "value": expected}],
            }
        )
    (tmp_path / "rules.yaml").write_text("groups: []\n")
    test_file = tmp_path / "quantiles_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yaml"],
                "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}],
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_counter_increase_survives_a_restart() -> None:
    assert counter_increase(10.0, 25.0) == 15.0
    assert counter_increase(100.0, 7.0) == 7.0  # the process restarted and counted 7 since


# -- a worker: a real prometheus-client registry over HTTP --------------------------------------


@dataclass
class WorkerMetrics:
    """The metrics of issue 6 in one registry, served on ``url``."""

    requests: Counter
    latency: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    cache_hits: Counter
    cache_misses: Counter
    rejected: Counter
    inflight: Gauge
    url: str

    def serve(self, model: str, status: str, seconds: float, count: int) -> None:
        for _ in range(count):
            self.requests.labels(model, "1", status).inc()
            self.latency.labels(model, "1", status).observe(seconds)


def make_registry() -> tuple[CollectorRegistry, dict[str, Any]]:
    registry = CollectorRegistry()
    metrics: dict[str, Any] = {
        "requests": Counter(
            "tensorgate_requests", "", ["model", "version", "status"], registry=registry
        ),
        "latency": Histogram(
            "tensorgate_request_duration_seconds",
            "",
            ["model", "version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        "batch_size": Histogram(
            "tensorgate_batch_size", "", ["model"], buckets=(1, 2, 4, 8, 16), registry=registry
        ),
        "queue_depth": Gauge("tensorgate_queue_depth", "", ["model"], registry=registry),
        "cache_hits": Counter("tensorgate_cache_hits", "", ["model", "tier"], registry=registry),
        "cache_misses": Counter("tensorgate_cache_misses", "", ["model"], registry=registry),
        "rejected": Counter("tensorgate_rejected", "", ["model", "reason"], registry=registry),
        "inflight": Gauge("tensorgate_inflight_requests", "", registry=registry),
    }
    return registry, metrics


@pytest.fixture
def worker() -> Iterator[WorkerMetrics]:
    registry, metrics = make_registry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield WorkerMetrics(**metrics, url=f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- Envoy's admin API: a stand-in whose answers the test scripts --------------------------------


def envoy_host(port: int, rq_active: int, rq_total: int, **health: bool) -> dict[str, Any]:
    """One entry of /clusters?format=json as Envoy 1.40 writes it: zero stats have no value, and
    uint64 values are strings."""
    stats: list[dict[str, Any]] = [{"name": "cx_total", "value": "2"}, {"name": "rq_error"}]
    stats.append({"name": "rq_total", "value": str(rq_total)} if rq_total else {"name": "rq_total"})
    active = {"type": "GAUGE", "name": "rq_active"}
    stats.append({**active, "value": str(rq_active)} if rq_active else active)
    return {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "stats": stats,
        "health_status": {"eds_health_status": "HEALTHY", **health},
        "weight": 1,
        "locality": {},
    }


def envoy_documents(hosts: list[dict[str, Any]], enforced: int, active: int) -> dict[str, Any]:
    prefix = "cluster.tensorgate_workers.outlier_detection."
    return {
        "/clusters": {
            "cluster_statuses": [
                {"name": "other", "host_statuses": [envoy_host(9999, 50, 50)]},
                {"name": "tensorgate_workers", "host_statuses": hosts},
            ]
        },
        "/stats": {
            "stats": [
                {"name": f"{prefix}ejections_active", "value": active},
                {"name": f"{prefix}ejections_enforced_total", "value": enforced},
                {"name": f"{prefix}ejections_total", "value": enforced},
            ]
        },
    }


class FakeEnvoyAdmin(ThreadingHTTPServer):
    """Answers /clusters and /stats with ``documents``; 404 for anything else."""

    documents: dict[str, Any]


class FakeEnvoyHandler(BaseHTTPRequestHandler):
    server: FakeEnvoyAdmin

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        document = self.server.documents.get(path)
        if document is None or "format=json" not in query:
            self.send_error(404)
            return
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is the frame."""


@pytest.fixture
def fake_envoy() -> Iterator[FakeEnvoyAdmin]:
    server = FakeEnvoyAdmin(("127.0.0.1", 0), FakeEnvoyHandler)
    server.documents = {}
    thread = threading.Thread(target=server.serve_forever, name="fake-envoy-admin", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def admin_of(server: ThreadingHTTPServer) -> EnvoyAdmin:
    return EnvoyAdmin(server.server_address[1])


class Clock:
    """Time the test sets, so that rates are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame_text(frame: Frame) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(render(frame))
    return console.export_text()


def row(text: str, *cells: str) -> list[str]:
    """The table line that starts with ``cells`` (column separators removed)."""
    for line in text.splitlines():
        words = line.replace("│", " ").split()
        if words[: len(cells)] == list(cells):
            return words
    raise AssertionError(f"no row starting with {cells} in:\n{text}")


# -- frames -------------------------------------------------------------------------------------


def test_frame_shows_rates_quantiles_batching_and_cache_between_two_polls(
    worker: WorkerMetrics,
) -> None:
    # Before the first poll: history that the rates must not count.
    worker.serve("digits", "OK", 0.0008, 10)
    worker.batch_size.labels("digits").observe(3)
    worker.cache_hits.labels("digits", "memory").inc(50)
    clock = Clock()
    top = Top([Target("w0", worker.url)], clock=clock)
    first = top.poll()
    assert row(frame_text(first), "w0", "digits")[2:5] == ["-", "-", "-"]  # no rate yet

    # Two seconds of traffic: 22 requests, 2 failed; half at 4 ms, half at 20 ms.
    worker.serve("digits", "OK", 0.004, 11)
    worker.serve("digits", "OK", 0.02, 9)
    worker.serve("digits", "INTERNAL", 0.02, 2)
    for size in (8, 8, 4, 2):
        worker.batch_size.labels("digits").observe(size)
    worker.cache_hits.labels("digits", "memory").inc(6)
    worker.cache_hits.labels("digits", "disk").inc(2)
    worker.cache_misses.labels("digits").inc(2)
    worker.rejected.labels("digits", "queue_full").inc(1)
    worker.queue_depth.labels("digits").set(3)
    worker.inflight.set(4)
    clock.now += 2.0
    text = frame_text(top.poll())

    # worker model req/s p50 p99 batch queue cache err/s rej/s inflight
    assert row(text, "w0", "digits") == [
        "w0",
        "digits",
        "11.0",  # 22 requests / 2 s
        "5.0",  # rank 11 of 22 ends the (2.5, 5] ms bucket
        "24.7",  # rank 21.78: 10 + 15 * 10.78 / 11 ms
        "5.50",  # (8 + 8 + 4 + 2) / 4 batches
        "3",
        "80.0%",  # (6 + 2) hits / 10 lookups
        "1.0",  # 2 INTERNAL / 2 s
        "0.5",  # 1 rejected / 2 s
        "4",
    ]
    assert "1/1 workers up, rates over" in text


def test_every_model_of_a_worker_gets_a_row(worker: WorkerMetrics) -> None:
    clock = Clock()
    top = Top([Target("w0", worker.url)], clock=clock)
    worker.serve("cnn", "OK", 0.04, 1)
    top.poll()
    worker.serve("cnn", "OK", 0.04, 4)
    worker.serve("mlp", "OK", 0.002, 8)
    clock.now += 1.0
    text = frame_text(top.poll())
    assert row(text, "w0", "cnn")[2] == "4.0"
    assert row(text, "mlp")[1] == "8.0"  # the worker's name is printed on its first row only


def test_missing_and_broken_workers_show_as_down(worker: WorkerMetrics) -> None:
    not_metrics = ThreadingHTTPServer(("127.0.0.1", 0), NotMetricsHandler)
    thread = threading.Thread(target=not_metrics.serve_forever, name="not-metrics", daemon=True)
    thread.start()
    try:
        targets = [
            Target("w0", worker.url),
            Target("w1", f"http://127.0.0.1:{free_port()}/metrics"),
            Target("w2", f"http://127.0.0.1:{not_metrics.server_address[1]}/metrics"),
            Target("w3", f"http://127.0.0.1:{not_metrics.server_address[1]}/missing"),
        ]
        worker.serve("digits", "OK", 0.004, 1)
        top = Top(targets, admin=EnvoyAdmin(free_port()), timeout=2.0)
        frame = top.poll()
    finally:
        not_metrics.shutdown()
        not_metrics.server_close()
        thread.join(timeout=5)
    text = frame_text(frame)
    assert row(text, "w0", "digits")
    assert row(text, "w1", "down:", "connection", "refused")
    assert row(text, "w2", "down:", "unreadable", "answer")  # a page that is not Prometheus text
    assert row(text, "w3", "down:", "HTTP", "404")
    assert "envoy http://127.0.0.1:" in text and "down:" in text.split("envoy")[-1]
    assert "1/4 workers up" in text
    assert frame.anything_up


class NotMetricsHandler(BaseHTTPRequestHandler):
    """An HTTP server that is not a metrics endpoint: HTML on /metrics, 404 elsewhere."""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = b"<html>not metrics</html>\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_envoy_hosts_show_active_requests_rates_and_ejections(fake_envoy: FakeEnvoyAdmin) -> None:
    clock = Clock()
    top = Top([], admin=admin_of(fake_envoy), clock=clock)
    fake_envoy.documents = envoy_documents(
        [envoy_host(8001, 0, 100), envoy_host(8002, 1, 90)], enforced=0, active=0
    )
    top.poll()
    fake_envoy.documents = envoy_documents(
        [
            envoy_host(8001, 3, 140),
            envoy_host(8002, 0, 92, failed_outlier_check=True),
            envoy_host(8003, 0, 0, failed_active_health_check=True),
        ],
        enforced=1,
        active=1,
    )
    clock.now += 2.0
    text = frame_text(top.poll())
    # host state active req/s ejections-seen
    assert row(text, "127.0.0.1:8001") == ["127.0.0.1:8001", "healthy", "3", "20.0", "0"]
    assert row(text, "127.0.0.1:8002") == ["127.0.0.1:8002", "ejected", "0", "1.0", "1"]
    assert row(text, "127.0.0.1:8003") == ["127.0.0.1:8003", "unhealthy", "0", "-", "0"]
    assert "127.0.0.1:9999" not in text  # another cluster
    assert "ejections: 1 enforced since start, 1 active" in text


@pytest.fixture
def real_envoy(tmp_path: Path) -> Iterator[int]:
    """Envoy 1.40 balancing two workers that do not exist; yields its admin port."""
    admin_port = free_port()
    settings = BalancerSettings(
        target="local",
        port=free_port(),
        admin_port=admin_port,
        endpoints=[Endpoint(port=free_port()), Endpoint(port=free_port())],
    )
    config = write_bootstrap(settings, tmp_path / "envoy.json")
    envoy = str(Path(sys.executable).with_name("envoy"))
    process = subprocess.Popen(
        [envoy, "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{admin_port}"
    try:

        def both_unhealthy() -> bool:
            assert process.poll() is None, "envoy exited"
            try:
                clusters = urllib.request.urlopen(f"{url}/clusters", timeout=1).read().decode()
            except OSError:
                return False
            return clusters.count("health_flags::/failed_active_hc") == 2

        wait_until(both_unhealthy, 30, "envoy to mark both missing workers unhealthy", 0.1)
        yield admin_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_real_envoy_admin_api_parses(real_envoy: int) -> None:
    text = frame_text(Top([], admin=EnvoyAdmin(real_envoy)).poll())
    hosts = [line for line in text.splitlines() if "127.0.0.1:" in line and "unhealthy" in line]
    assert len(hosts) == 2, text
    assert "ejections: 0 enforced since start, 0 active" in text


# -- the command --------------------------------------------------------------------------------


def run_top(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tensorgate")
    top_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["top", *argv])
    return int(args.func(args))


def test_top_once_prints_one_frame(
    worker: WorkerMetrics,
    fake_envoy: FakeEnvoyAdmin,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    fake_envoy.documents = envoy_documents([envoy_host(8001, 2, 10)], enforced=0, active=0)
    worker.serve("digits", "OK", 0.004, 5)
    missing = f"http://127.0.0.1:{free_port()}/metrics"
    port = fake_envoy.server_address[1]
    argv = ["--once", "--interval", "0.2", "--metrics", worker.url, missing]
    assert run_top([*argv, "--admin-port", str(port)]) == 0
    out = capsys.readouterr().out
    assert row(out, f"127.0.0.1:{worker.url.split(':')[2].split('/')[0]}", "digits")
    assert "down:" in out
    assert row(out, "127.0.0.1:8001", "healthy", "2")


def test_top_once_fails_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--once", "--interval", "0.1", "--workers", "2", "--metrics-port", str(free_port())]
    assert run_top([*argv, "--admin-port", str(free_port())]) == 1
    assert "0/2 workers up" in capsys.readouterr().out


def test_top_rejects_a_non_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_top(["--once", "--interval", "0"])
    assert "must be positive" in capsys.readouterr().err


class CountingMetricsServer(ThreadingHTTPServer):
    """Serves a registry like prometheus-client does, and counts the scrapes."""

    registry: CollectorRegistry
    scrapes: int = 0


class CountingMetricsHandler(BaseHTTPRequestHandler):
    server: CountingMetricsServer

    def do_GET(self) -> None:
        body = generate_latest(self.server.registry)
        self.server.scrapes += 1
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_live_view_refreshes_until_ctrl_c() -> None:
    registry, metrics = make_registry()
    metrics["requests"].labels("digits", "1", "OK").inc()
    server = CountingMetricsServer(("127.0.0.1", 0), CountingMetricsHandler)
    server.registry = registry
    thread = threading.Thread(target=server.serve_forever, name="counting-metrics", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    command = [sys.executable, "-m", "tensorgate.cli.main", "top", "--interval", "0.2"]
    process = subprocess.Popen(
        [*command, "--metrics", url, "--admin-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    try:

        def refreshed_three_times() -> bool:
            assert process.poll() is None, process.communicate()
            return server.scrapes >= 3

        wait_until(refreshed_three_times, 30, "top to refresh three times")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert process.returncode == 0, err
    assert row(out, f"127.0.0.1:{server.server_address[1]}", "digits")
