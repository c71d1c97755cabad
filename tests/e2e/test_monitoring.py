"""Monitoring end to end: Prometheus scrapes a running `tensorgate up`, alerts fire and resolve;
one request makes one trace across the client, Envoy and the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tensorgate.client import Client
from tests.e2e.balancer_fixtures import tensorgate_up
from tests.support.otlp import otlp_receiver
from tests.support.processes import REPO_ROOT
from tests.support.prometheus import Prometheus, prometheus
from tests.support.waiting import wait_until

PIXELS = np.zeros((1, 64), np.float32)


def test_series_are_queryable_and_a_worker_down_alert_fires_then_resolves(tmp_path: Path) -> None:
    with tensorgate_up(tmp_path, workers=2) as up:
        layout = up.layout
        workers = [f"127.0.0.1:{layout.metrics_port + i}" for i in range(2)]
        with prometheus(tmp_path, workers, f"127.0.0.1:{layout.admin_port}") as prom:
            with Client(up.target) as client:
                for _ in range(50):
                    client.infer("digits", {"pixels": PIXELS})

            def served(prom: Prometheus = prom) -> bool:
                result = prom.query('sum(tensorgate_requests_total{model="digits",status="OK"})')
                return bool(result) and float(result[0]["value"][1]) >= 50

            wait_until(served, 30, "the requests counted in Prometheus", interval=0.5)
            assert prom.query(
                'tensorgate_request_duration_seconds_bucket{model="digits",le="0.1"} > 0'
            )
            assert prom.query('tensorgate_model_ready{model="digits"} == 1')
            # Envoy is a second scrape target: its first scrape may come after the workers'
            wait_until(
                lambda: bool(
                    prom.query(
                        'envoy_cluster_membership_healthy{envoy_cluster_name="tensorgate_workers"} == 2'
                    )
                ),
                30,
                "Envoy's two healthy workers in Prometheus",
                interval=0.5,
            )
            assert prom.firing() == set()

            # the fault: worker 1 stops answering (SIGSTOP), scrapes of it time out
            victim = up.pids()["worker 1"]
            os.kill(victim, signal.SIGSTOP)
            try:
                wait_until(
                    lambda: "TensorgateWorkerDown" in prom.firing(),
                    60,
                    "TensorgateWorkerDown to fire",
                    interval=0.5,
                )
            finally:
                os.kill(victim, signal.SIGCONT)
            wait_until(
                lambda: "TensorgateWorkerDown" not in prom.firing(),
                60,
                "TensorgateWorkerDown to resolve",
                interval=0.5,
            )


CLIENT_DRIVER = """
import json, sys
import numpy as np
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tensorgate.client import Client

provider = TracerProvider(resource=Resource.create({"service.name": "tensorgate-client"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[2], insecure=True)))
trace.set_tracer_provider(provider)
with trace.get_tracer("test").start_as_current_span("caller") as span:
    with Client(sys.argv[1]) as client:
        client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})
    trace_id = format(span.get_span_context().trace_id, "032x")
provider.shutdown()
print(json.dumps({"trace_id": trace_id}))
"""


def test_one_request_makes_one_trace_through_client_envoy_and_worker(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        with tensorgate_up(tmp_path, workers=1, env=env) as up:
            result = subprocess.run(
                [sys.executable, "-c", CLIENT_DRIVER, up.target, receiver.endpoint],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=REPO_ROOT,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            trace_id = json.loads(result.stdout)["trace_id"]

            def complete(spans: list) -> bool:
                services = {s.service for s in spans if s.trace_id == trace_id}
                return {
                    "tensorgate-client",
                    "tensorgate-envoy",
                    "tensorgate-worker",
                } <= services and any(
                    s.name == "batch run" and s.trace_id == trace_id for s in spans
                )

            spans = [s for s in receiver.wait_for(complete, timeout=30) if s.trace_id == trace_id]
    by_service: dict[str, set[str]] = {}
    for span in spans:
        by_service.setdefault(span.service, set()).add(span.name)
    assert "inference.GRPCInferenceService/ModelInfer" in by_service.get(
        "tensorgate-client", set()
    ), by_service
    assert by_service.get("tensorgate-envoy"), by_service
    assert {
        "inference.GRPCInferenceService/ModelInfer",
        "queue wait",
        "batch run",
        "encode",
    } <= by_service.get("tensorgate-worker", set()), by_service
    batch = next(s for s in spans if s.name == "batch run")
    assert batch.attributes["tensorgate.model"] == "digits"
    assert batch.attributes["tensorgate.batch_size"] == 1
    assert batch.attributes["tensorgate.execution_provider"] == "CPUExecutionProvider"
    server_span = next(
        s for s in spans if s.service == "tensorgate-worker" and s.name.endswith("/ModelInfer")
    )
    assert server_span.span_id in batch.links
    # the worker's span continues Envoy's, which continues the client's: one trace, parent links intact
    envoy_ids = {s.span_id for s in spans if s.service == "tensorgate-envoy"}
    assert server_span.parent_span_id in envoy_ids
    # health checks are not traced: no span of the grpc.health.v1 service in any trace
    assert not any("Health" in s.name for s in receiver.spans)
