"""The composition root: builds a worker's gRPC server, services and models from Settings."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tensorgate.server.allocator import return_large_blocks_to_the_os
from tensorgate.server.auth import AioAuthInterceptor, AuthInterceptor, authenticator_from_settings
from tensorgate.server.cache import ResponseCache
from tensorgate.server.dataplane import DataPlane
from tensorgate.server.errors import ModelLoadError, TensorgateError
from tensorgate.server.faults import FaultInjector
from tensorgate.server.health import Health
from tensorgate.server.metrics import CacheSizeCollector, GpuCollector, Metrics, ModelStateCollector
from tensorgate.server.model_config import load_model_config
from tensorgate.server.models import CONTROL_POLL, ModelManager, ModelState
from tensorgate.server.polling import RepositoryPoller
from tensorgate.server.probe_port import start_aio_probe_server, start_probe_server
from tensorgate.server.repository import ModelRepository, check_repository
from tensorgate.server.servicer import InferenceServicer
from tensorgate.server.settings import Settings
from tensorgate.server.streams import RequestSlots
from tensorgate.server.tls import TlsFiles, server_credentials
from tensorgate.server.tracing import Tracing
from tensorgate.server.transport import (
    AioCore,
    EventLoop,
    Listening,
    ThreadCore,
    create_aio_server,
    create_thread_server,
)

log = logging.getLogger(__name__)

#: RPCs that may wait at once beyond the batches themselves: what "no request fails up to a
#: concurrency of 256" needs, since every waiting RPC holds a handler thread (threads core).
CONCURRENCY_HEADROOM = 256
#: threads that wait for the answers of stream requests (threads core)
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


def tls_files(settings: Settings) -> TlsFiles | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return TlsFiles(
        settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.tls_key_group_readable
    )


def listening(settings: Settings) -> Listening:
    """Plaintext, or TLS (mTLS with a client CA) with certificates reloaded when they change."""
    files = tls_files(settings)
    return Listening(
        f"{settings.host}:{settings.port}",
        None if files is None else server_credentials(files),
        settings.reflection,
    )


class ServerApp:
    """One worker: gRPC server, health, reflection, models. ``start()``, then ``stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        return_large_blocks_to_the_os()
        self._events = EventLoop() if settings.grpc_core == "aio" else None
        self.health = Health(self._events.loop if self._events is not None else None)
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
        self.metrics = Metrics()
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
        self.dataplane = DataPlane(
            self.models,
            FaultInjector(settings.fault_latency_ms, settings.fault_error_rate),
            self.cache,
            self.tracing,
        )
        self.threads = handler_threads(settings, self.repository)
        self.max_concurrent_rpcs = settings.max_concurrent_rpcs or self.threads
        self._stream_executor = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="stream")
        self.servicer = InferenceServicer(
            self.dataplane,
            self.ready,
            self.metrics,
            self.tracing,
            RequestSlots(self.max_concurrent_rpcs),
            self._stream_executor,
        )
        where = listening(settings)
        authenticator = authenticator_from_settings(
            settings.auth_tokens, settings.trust_roles_header
        )
        self.core: ThreadCore | AioCore
        if self._events is not None:
            self.core = AioCore(
                self._events,
                lambda: create_aio_server(
                    self.servicer,
                    self.health,
                    where,
                    max_concurrent_rpcs=self.max_concurrent_rpcs,
                    max_message_bytes=settings.max_message_bytes,
                    interceptors=[AioAuthInterceptor(authenticator)] if authenticator else [],
                ),
            )
        else:
            self.core = ThreadCore(
                lambda: create_thread_server(
                    self.servicer,
                    self.health,
                    where,
                    threads=self.threads,
                    max_concurrent_rpcs=self.max_concurrent_rpcs,
                    max_message_bytes=settings.max_message_bytes,
                    interceptors=[AuthInterceptor(authenticator)] if authenticator else [],
                )
            )
        self.port = self.core.port
        self.metrics_port = 0
        #: the plaintext health-only port (--health-port), for probes that cannot speak TLS
        self.probe_server: Any = None
        self.health_port = 0

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
        """Serves (NOT_SERVING until the models are loaded), loads the models; returns the port.

        Raises RepositoryError (one line) when the repository is missing or holds no model."""
        check_repository(self.settings.model_repository)
        self.core.start()
        if self.settings.health_port:
            host, port = self.settings.host, self.settings.health_port
            if self._events is not None:
                self.probe_server, self.health_port = self._events.call(
                    start_aio_probe_server(self.health.servicer, host, port)
                )
            else:
                self.probe_server, self.health_port = start_probe_server(
                    self.health.servicer, host, port
                )
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
            "serving %d model(s) on %s:%d (gRPC core %s, %s, max %d concurrent RPCs)",
            len(names),
            self.settings.host,
            self.port,
            self.settings.grpc_core,
            "one event loop"
            if self.settings.grpc_core == "aio"
            else f"{self.threads} handler threads",
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
        if self.probe_server is not None:
            self._stop_probe_server()
        self.core.stop(self.settings.grace_seconds)
        self.models.close_all(self.settings.grace_seconds)
        self._stream_executor.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()
        self.metrics.close()
        self.tracing.shutdown()
        log.info("stopped")

    def _stop_probe_server(self) -> None:
        if self._events is not None:
            self._events.call(self.probe_server.stop(None))
        else:
            self.probe_server.stop(None)

    def wait(self) -> None:
        self.core.wait()
