"""The composition root: builds a worker's gRPC server, services and models from Settings."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto import inference_pb2_grpc
from tensorgate.server.cache import ResponseCache
from tensorgate.server.dataplane import InferenceService
from tensorgate.server.errors import ModelLoadError, TensorgateError
from tensorgate.server.faults import FaultInjector
from tensorgate.server.health import Health
from tensorgate.server.interceptors import ErrorMappingInterceptor
from tensorgate.server.metrics import CacheSizeCollector, GpuCollector, Metrics, ModelStateCollector
from tensorgate.server.model_config import load_model_config
from tensorgate.server.models import CONTROL_POLL, ModelManager, ModelState
from tensorgate.server.polling import RepositoryPoller
from tensorgate.server.repository import ModelRepository, check_repository
from tensorgate.server.servicer import InferenceServicer
from tensorgate.server.settings import Settings
from tensorgate.server.tracing import Tracing
from tensorgate.server.transport import server_options

log = logging.getLogger(__name__)

#: RPCs that may wait at once beyond the batches themselves: what "no request fails up to a
#: concurrency of 256" needs, since every waiting RPC holds a handler thread.
CONCURRENCY_HEADROOM = 256
STREAM_THREADS = 64


def handler_threads(settings: Settings, repository: ModelRepository) -> int:
    """Pool size: each RPC waiting on a batcher holds a thread, so leave room for two full batches
    per instance (one running, one forming) of the largest model, plus the concurrency headroom."""
    if settings.grpc_threads is not None:
        return settings.grpc_threads
    largest = 0
    for name in repository.model_names():
        try:
            config = load_model_config(repository.root / name)
        except ModelLoadError:  # that model will be UNAVAILABLE, with its reason
            continue
        largest = max(largest, config.max_batch_size * config.instances)
    return CONCURRENCY_HEADROOM + 2 * largest + 8


class ServerApp:
    """One worker: gRPC server, health, reflection, models. ``start()``, then ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = Health()
        self.ready = threading.Event()
        self.repository = ModelRepository(settings.model_repository)
        self.tracing = Tracing()
        self._started = False
        self._readiness_lock = threading.Lock()
        self.models = ModelManager(
            self.repository,
            settings,
            observers_for=lambda name: [self.metrics.batch_observer(name)],
            on_change=self._on_model_change,
            tracing=self.tracing,
        )
        self.metrics = Metrics(labels=self.models.metric_labels)
        self.poller = (
            RepositoryPoller(self.models, settings.repository_poll_seconds, settings.models)
            if settings.model_control_mode == CONTROL_POLL
            else None
        )
        self.metrics.registry.register(
            ModelStateCollector(self.models.index, self.models.queue_depths)
        )
        self.metrics.registry.register(GpuCollector())
        self.cache = ResponseCache.from_settings(settings, observer=self.metrics)
        if self.cache is not None:
            cache = self.cache
            self.metrics.registry.register(
                CacheSizeCollector(lambda: cache.memory_bytes, cache.disk_bytes)
            )
        self.service = InferenceService(
            self.models,
            FaultInjector(settings.fault_latency_ms, settings.fault_error_rate),
            self.cache,
            self.tracing,
        )
        self.threads = handler_threads(settings, self.repository)
        self.max_concurrent_rpcs = settings.max_concurrent_rpcs or self.threads
        self._stream_executor = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="stream")
        self.server = grpc.server(
            ThreadPoolExecutor(self.threads, thread_name_prefix="grpc-handler"),
            interceptors=[ErrorMappingInterceptor()],
            options=server_options(settings.max_message_bytes),
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
        )
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                self.service, self._stream_executor, self.ready, self.metrics, self.tracing
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.port = 0
        self.metrics_port = 0

    def _on_model_change(self, name: str, state: ModelState, version: str) -> None:
        self.health.set_model(name, state == ModelState.READY)
        self._refresh_readiness()

    def _refresh_readiness(self) -> None:
        """ServerReady and health "": once started and until draining, SERVING when no model
        failed to load (strict readiness, as in Triton) or when at least one is ready (relaxed)."""
        with self._readiness_lock:
            if not self._started:
                return
            ready = self.models.readiness(self.settings.strict_readiness)
            if ready:
                self.ready.set()
            else:
                self.ready.clear()
            self.health.set_server(ready)

    def start(self) -> int:
        """Binds, serves (NOT_SERVING until the models are loaded), loads the models; returns the port.

        Raises RepositoryError (one line) when the repository is missing or holds no model."""
        check_repository(self.settings.model_repository)
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        self.server.start()
        if self.settings.metrics_port:
            self.metrics_port = self.metrics.serve(
                self.settings.metrics_host, self.settings.metrics_port
            )
        names = (
            self.settings.models
            if self.settings.models is not None
            else self.repository.model_names()
        )
        if self.poller is not None:
            self.poller.sync()
            self.poller.start()
        else:
            for name in names:
                # a model that fails is UNAVAILABLE with its reason; the others still serve
                with contextlib.suppress(TensorgateError):
                    self.models.load(name)
        with self._readiness_lock:
            self._started = True
        self._refresh_readiness()
        if not self.ready.is_set():
            log.warning(
                "not ready: %s (strict readiness; --no-strict-readiness serves the others)",
                "; ".join(
                    f"{name}: {reason}"
                    for name, _version, state, reason in self.models.index()
                    if state == ModelState.UNAVAILABLE and reason not in ("not loaded", "unloaded")
                ),
            )
        log.info(
            "serving %d model(s) on %s:%d (%d handler threads, max %d concurrent RPCs)",
            len(names),
            self.settings.host,
            self.port,
            self.threads,
            self.max_concurrent_rpcs,
        )
        return self.port

    def stop(self) -> None:
        """Drain, then stop: NOT_SERVING for drain_seconds while still answering, so balancers
        move away; then requests in flight get grace_seconds to finish."""
        log.info("draining for %.1fs", self.settings.drain_seconds)
        with self._readiness_lock:
            self._started = False
        if self.poller is not None:
            self.poller.stop()
        self.ready.clear()
        self.health.drain()
        time.sleep(self.settings.drain_seconds)
        self.server.stop(self.settings.grace_seconds).wait()
        self.models.close_all(self.settings.grace_seconds)
        self._stream_executor.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()
        self.metrics.close()
        self.tracing.shutdown()
        log.info("stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()
