"""Prometheus metrics of one worker, served on its own /metrics port.

Latencies are histograms with millisecond-scale buckets, so they aggregate across workers and
replicas; the request histogram carries the trace id as an exemplar (OpenMetrics format).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tensorgate.server.batching import BatchEvent
from tensorgate.server.errors import TensorgateError

log = logging.getLogger(__name__)

#: seconds: 0.1 ms to 10 s, dense where model serving lives (1-100 ms)
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


def status_of(error: BaseException | None) -> str:
    """The gRPC code name a request ended with."""
    if error is None:
        return grpc.StatusCode.OK.name
    if isinstance(error, TensorgateError):
        return error.code.name
    return grpc.StatusCode.INTERNAL.name


@dataclass
class RequestRecord:
    """What a request's handler learns as it goes: the version served, the trace id for exemplars."""

    model: str
    version: str
    trace_id: str | None = None


class Metrics:
    """Every series of a worker, in a registry of its own (no global state).

    The request series take the labels their caller records: the servicer bounds them to the model
    names and versions this server knows (``ModelManager.metric_labels``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "tensorgate_request_duration_seconds",
            "Time from request received to answer sent.",
            ["model", "version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "tensorgate_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "tensorgate_compute_duration_seconds",
            "Duration of one ONNX Runtime run (a batch).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tensorgate_batch_size",
            "Rows per ONNX Runtime run.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "tensorgate_requests",
            "Inference requests by final status.",
            ["model", "version", "status"],
            registry=r,
        )
        self.cache_hits = Counter(
            "tensorgate_cache_hits",
            "Requests answered from the cache.",
            ["model", "tier"],
            registry=r,
        )
        self.cache_misses = Counter(
            "tensorgate_cache_misses", "Cache lookups that found nothing.", ["model"], registry=r
        )
        self.cache_evictions = Counter(
            "tensorgate_cache_evictions",
            "Entries evicted to keep a cache tier in its bound.",
            ["tier"],
            registry=r,
        )
        self.cache_lookup = Histogram(
            "tensorgate_cache_lookup_duration_seconds",
            "Time to answer from the cache, or to miss.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "tensorgate_rejected",
            "Requests refused before compute.",
            ["model", "reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "tensorgate_inflight_requests", "Inference requests being handled now.", registry=r
        )
        self._http: tuple[object, threading.Thread] | None = None
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    @contextmanager
    def track_request(self, model: str, version: str) -> Iterator[RequestRecord]:
        """Counts one request and times it; its status comes from the exception that ends it, if any."""
        record = RequestRecord(model, version)
        started = time.perf_counter()
        self.inflight.inc()
        error: BaseException | None = None
        try:
            yield record
        except BaseException as raised:
            error = raised
            raise
        finally:
            self.inflight.dec()
            duration, count = self._request_series(record.model, record.version, status_of(error))
            exemplar = {"trace_id": record.trace_id} if record.trace_id else None
            duration.observe(time.perf_counter() - started, exemplar)
            count.inc()

    def _request_series(self, model: str, version: str, status: str) -> tuple[Any, Any]:
        """The labelled children of one (model, version, status), looked up once: ``labels()`` takes
        a lock and builds a tuple on every call, which shows on the hot path."""
        key = (model, version, status)
        series = self._request_children.get(key)
        if series is None:
            series = (
                self.request_duration.labels(model, version, status),
                self.requests.labels(model, version, status),
            )
            self._request_children[key] = series
        return series

    # -- the response cache's observer
    def on_hit(self, model: str, tier: str, lookup_seconds: float) -> None:
        self.cache_hits.labels(model, tier).inc()
        self.cache_lookup.labels(model).observe(lookup_seconds)

    def on_miss(self, model: str, lookup_seconds: float) -> None:
        self.cache_misses.labels(model).inc()
        self.cache_lookup.labels(model).observe(lookup_seconds)

    def on_evict(self, tier: str, count: int) -> None:
        self.cache_evictions.labels(tier).inc(count)

    def batch_observer(self, model: str) -> ModelBatchMetrics:
        return ModelBatchMetrics(self, model)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint; returns its port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = (server, thread)
        return server.server_port  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread.join(5)
            self._http = None


class ModelBatchMetrics:
    """The batcher's observer for one model: queue wait, compute time, batch size, rejections."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._queue = metrics.queue_duration.labels(model)
        self._compute = metrics.compute_duration.labels(model)
        self._batch = metrics.batch_size.labels(model)
        self._rejected = metrics.rejected
        self._model = model

    def on_batch(self, event: BatchEvent) -> None:
        for waited in event.queue_seconds:
            self._queue.observe(waited)
        self._compute.observe(event.compute_seconds)
        self._batch.observe(event.batch_size)

    def on_reject(self, reason: str) -> None:
        self._rejected.labels(self._model, reason).inc()


class ModelStateCollector(Collector):
    """Read at scrape time: queue depth per model and readiness per model and version."""

    def __init__(
        self,
        index: Callable[[], list[tuple[str, str, str, str]]],
        queue_depths: Callable[[], dict[str, int]],
    ) -> None:
        self._index = index
        self._queue_depths = queue_depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily(
            "tensorgate_model_ready",
            "1 when the model version is ready.",
            labels=["model", "version"],
        )
        for name, version, state, _reason in self._index():
            ready.add_metric([name, version], 1.0 if state == "READY" else 0.0)
        yield ready
        depth = GaugeMetricFamily(
            "tensorgate_queue_depth", "Requests waiting in the batcher.", labels=["model"]
        )
        for name, value in self._queue_depths().items():
            depth.add_metric([name], float(value))
        yield depth


class GpuCollector(Collector):
    """Device utilization and memory through NVML; yields nothing on hosts without an NVIDIA GPU."""

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no nvidia-ml-py, no driver, or no device: the series stay absent
            log.debug("NVML not available: no GPU metrics", exc_info=True)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        if nvml is None:
            return
        utilization = GaugeMetricFamily(
            "tensorgate_gpu_utilization_ratio",
            "GPU busy share over the last sample period.",
            labels=["gpu"],
        )
        memory = GaugeMetricFamily(
            "tensorgate_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "tensorgate_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
        )
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            utilization.add_metric([str(index)], rates.gpu / 100.0)
            memory.add_metric([str(index)], float(info.used))
            total.add_metric([str(index)], float(info.total))
        yield from (utilization, memory, total)


class CacheSizeCollector(Collector):
    """Read at scrape time: bytes held by each tier of the response cache."""

    def __init__(self, memory_bytes: Callable[[], int], disk_bytes: Callable[[], int]) -> None:
        self._memory_bytes = memory_bytes
        self._disk_bytes = disk_bytes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = GaugeMetricFamily(
            "tensorgate_cache_bytes", "Bytes held by the response cache.", labels=["tier"]
        )
        held.add_metric(["memory"], float(self._memory_bytes()))
        held.add_metric(["disk"], float(self._disk_bytes()))
        yield held
