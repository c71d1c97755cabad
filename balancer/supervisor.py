"""The local stack behind ``tensorgate up``: N workers and one Envoy, started, watched and drained.

The supervisor is single-threaded on purpose: it handles signals between short ticks of its loop. Rolling restarts are a
generator stepped once per tick, so signals and crashed workers are still handled while one runs.

Shutdown order (SIGINT/SIGTERM), the only order that loses no request: the workers get SIGTERM and
answer NOT_SERVING while still serving; Envoy's next health check stops routing to them; the
workers finish their calls in flight and exit; then Envoy exits.
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from tensorgate.balancer.admin import AdminUnavailable, EnvoyAdmin
from tensorgate.balancer.backoff import Backoff
from tensorgate.balancer.envoy import DRAIN_TIME_SECONDS, envoy_command
from tensorgate.balancer.envoy_config import write_bootstrap
from tensorgate.balancer.ports import PortLayout
from tensorgate.balancer.processes import Child
from tensorgate.balancer.security import InternalPki, StackSecurity, worker_security_settings
from tensorgate.balancer.settings import BalancerSettings, Endpoint
from tensorgate.server.settings import Settings
from tensorgate.server.workers import worker_command

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.1
#: the same signal again within this many seconds is one signal (delivered twice, not sent twice)
SAME_SIGNAL_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Beyond drain + grace, how long a stopping worker may take before it is killed.
EXIT_MARGIN_SECONDS = 5.0
ENVOY_STOP_SECONDS = 10.0
#: beyond Envoy's drain time, how long calls still in flight through it may take to finish
ENVOY_DRAIN_MARGIN_SECONDS = 5.0
#: Envoy's gauge of calls in flight on the front door
INGRESS_ACTIVE_STAT = "http.grpc_ingress.downstream_rq_active"


@dataclass(frozen=True)
class StackConfig:
    """Everything ``tensorgate up`` needs: where the models are, the ports, both settings objects."""

    model_repository: Path
    layout: PortLayout
    server: Settings
    balancer: BalancerSettings
    security: StackSecurity = field(default_factory=StackSecurity)
    startup_timeout_seconds: float = 120.0

    @classmethod
    def build(
        cls,
        model_repository: Path,
        layout: PortLayout,
        server: Settings,
        listen_host: str | None = None,
        security: StackSecurity | None = None,
    ) -> StackConfig:
        """``listen_host`` binds the front door (unset: the balancer settings' own default);
        ``security`` says what the front door and the workers protect (docs/security.md)."""
        security = security or StackSecurity()
        overrides = {"listen_host": listen_host} if listen_host else {}
        balancer = BalancerSettings.for_server(
            server,
            target="local",
            endpoints=[Endpoint(port=p) for p in layout.worker_ports()],
            port=layout.port,
            admin_port=layout.admin_port,
            **overrides,
            **security.balancer_overrides(server),
        )
        return cls(model_repository, layout, server, balancer, security)


@dataclass
class Slot:
    """A supervised child and its restart state."""

    child: Child
    backoff: Backoff = field(default_factory=Backoff)
    #: when a crashed child is due to start again
    restart_at: float | None = None
    #: the exit is one we asked for (drain, rolling restart): no crash restart
    stopping: bool = False


class Supervisor:
    """Runs the stack until a stop signal; :meth:`run` returns the exit status."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        #: the bootstrap, its SDS files and the internal CA (mode 0700, removed when run() ends)
        self.workdir = Path(tempfile.mkdtemp(prefix="tensorgate-envoy-"))
        self.pki = (
            InternalPki.create(self.workdir / "pki") if config.security.tls_internal else None
        )
        self.balancer = (
            config.balancer.model_copy(update={"upstream_tls": self.pki.upstream})
            if self.pki is not None
            else config.balancer
        )
        self.admin = EnvoyAdmin(config.layout.admin_port)
        self.workers = [Slot(self._worker_child(i)) for i in range(config.layout.workers)]
        self.envoy: Slot | None = None
        self._signals: list[int] = []
        self._last_signal_at: dict[int, float] = {}
        self._rolling: Iterator[None] | None = None

    # -- children

    def _worker_child(self, index: int) -> Child:
        layout = self.config.layout
        settings = self.config.server.model_copy(
            update={
                "model_repository": self.config.model_repository,
                "host": "127.0.0.1",
                "port": layout.worker_port(index),
                "metrics_port": layout.worker_metrics_port(index),
                "workers": 1,
                "host_workers": layout.workers,  # intra-op threads 0: the cores shared
                **worker_security_settings(self.config.server, self.config.security, self.pki),
            }
        )
        argv, env = worker_command(settings=settings)
        return Child(f"worker {index}", argv, env=env)

    def _start(self, slot: Slot) -> None:
        slot.child.start()
        slot.stopping, slot.restart_at = False, None
        logger.info("%s started: pid %d", slot.child.name, slot.child.pid)

    def _port_of(self, slot: Slot) -> int:
        return self.config.layout.worker_port(self.workers.index(slot))

    def _healthy_ports(self) -> set[int]:
        try:
            return self.admin.healthy_ports()
        except AdminUnavailable:
            return set()

    # -- signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Queues a signal. The same signal again within SAME_SIGNAL_SECONDS counts once: `make`
        and a terminal each deliver a Ctrl-C, and a group-wide SIGTERM arrives twice through make."""
        now = time.monotonic()
        last = self._last_signal_at.get(signum)
        self._last_signal_at[signum] = now
        if last is not None and now - last < SAME_SIGNAL_SECONDS:
            return
        self._signals.append(signum)

    def _take_signal(self) -> int | None:
        return self._signals.pop(0) if self._signals else None

    def _stop_requested(self) -> bool:
        return any(s in STOP_SIGNALS for s in self._signals)

    def _pop_stop_signal(self) -> int | None:
        for received in self._signals:
            if received in STOP_SIGNALS:
                self._signals.remove(received)
                return received
        return None

    # -- the loop

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        handled = (*STOP_SIGNALS, signal.SIGHUP)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        try:
            config_path = write_bootstrap(self.balancer, self.workdir / "envoy.json")
            return self._run(config_path, on_ready)
        finally:
            for slot in self._all_slots():
                slot.child.kill()  # a no-op for every child already stopped
            for s, handler in previous.items():
                signal.signal(s, handler)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _all_slots(self) -> list[Slot]:
        return self.workers + ([self.envoy] if self.envoy else [])

    def _run(self, config_path: Path, on_ready: Callable[[], None] | None) -> int:
        for slot in self.workers:
            self._start(slot)
        envoy_argv = envoy_command(config_path, concurrency=self.balancer.concurrency)
        self.envoy = Slot(Child("envoy", envoy_argv))
        self._start(self.envoy)
        if not self._wait_until_up():
            stopped_by_signal = self._pop_stop_signal() is not None
            status = self._shutdown()
            return status if stopped_by_signal else 1
        logger.info("all %d workers are healthy behind Envoy", len(self.workers))
        if on_ready is not None:
            on_ready()
        while True:
            received = self._take_signal()
            if received in STOP_SIGNALS:
                logger.info("%s: stopping", signal.Signals(received).name)
                return self._shutdown()
            if received == signal.SIGHUP:
                self._begin_rolling_restart()
            self._tend()
            time.sleep(TICK_SECONDS)

    def _wait_until_up(self) -> bool:
        """Wait until Envoy routes to every worker; False on timeout, a crash or a stop signal."""
        wanted = set(self.config.layout.worker_ports())
        deadline = time.monotonic() + self.config.startup_timeout_seconds
        while time.monotonic() < deadline:
            if self._stop_requested():
                return False
            for slot in self._all_slots():
                status = slot.child.poll()
                if status is not None:
                    logger.error("%s exited during startup (status %s)", slot.child.name, status)
                    return False
            if wanted <= self._healthy_ports():
                return True
            time.sleep(TICK_SECONDS)
        missing = sorted(wanted - self._healthy_ports())
        logger.error(
            "workers on ports %s not healthy after %.0f s",
            missing,
            self.config.startup_timeout_seconds,
        )
        return False

    def _tend(self) -> None:
        """Restart crashed children (after their backoff); step a rolling restart."""
        now = time.monotonic()
        for slot in self._all_slots():
            status = slot.child.poll()
            if status is not None and slot.restart_at is None and not slot.stopping:
                delay = slot.backoff.next_delay(now - slot.child.started_at)
                logger.warning(
                    "%s (pid %d) exited unexpectedly with status %s; restarting in %.2f s",
                    slot.child.name, slot.child.pid, status, delay,
                )  # fmt: skip
                slot.restart_at = now + delay
            if slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)
        if self._rolling is not None:
            try:
                next(self._rolling)
            except StopIteration:
                self._rolling = None

    # -- rolling restart (SIGHUP)

    def _begin_rolling_restart(self) -> None:
        if self._rolling is not None:
            logger.info("SIGHUP: a rolling restart is already running")
            return
        logger.info("SIGHUP: restarting the %d workers one at a time", len(self.workers))
        self._rolling = self._rolling_restart()

    def _rolling_restart(self) -> Iterator[None]:
        """Drain worker i, wait for its exit, start it again, wait until Envoy routes to it; next."""
        server = self.config.server
        for slot in self.workers:
            port = self._port_of(slot)
            if len(self.workers) > 1 and not self._healthy_ports() - {port}:
                logger.warning(
                    "rolling restart: no other healthy worker to take %s's calls", slot.child.name
                )
            slot.stopping = True
            slot.child.signal(signal.SIGTERM)
            deadline = (
                time.monotonic() + server.drain_seconds + server.grace_seconds + EXIT_MARGIN_SECONDS
            )
            while slot.child.running and time.monotonic() < deadline:
                yield
            if slot.child.running:
                slot.child.kill()
            self._start(slot)
            deadline = time.monotonic() + self.config.startup_timeout_seconds
            while port not in self._healthy_ports():
                if time.monotonic() > deadline:
                    logger.error(
                        "rolling restart stopped: %s is not healthy again", slot.child.name
                    )
                    return
                yield
            logger.info("rolling restart: %s is serving again", slot.child.name)
        logger.info("rolling restart done")

    # -- shutdown

    def _shutdown(self) -> int:
        """Drain in order; a second stop signal kills everything at once. Returns the exit status."""
        self._rolling = None
        server = self.config.server
        logger.info(
            "draining: workers answer NOT_SERVING for %.1f s, then stop", server.drain_seconds
        )
        for slot in self.workers:
            slot.stopping, slot.restart_at = True, None
            slot.child.signal(signal.SIGTERM)
        worker_ports = set(self.config.layout.worker_ports())
        routing_deadline = server.drain_seconds + self.config.balancer.health_check_interval_seconds
        if self._wait(lambda: not self._healthy_ports() & worker_ports, routing_deadline):
            logger.info("Envoy no longer routes to any worker")
        if not self._wait(
            lambda: not any(s.child.running for s in self.workers),
            server.drain_seconds + server.grace_seconds + EXIT_MARGIN_SECONDS,
        ):
            if self._stop_requested():
                logger.warning("second stop signal: killing every process now")
                return 1
            logger.warning("workers still running after drain and grace: killing them")
        for slot in self.workers:
            slot.child.kill()
        if self.envoy is not None:
            self.envoy.stopping = True
            self._drain_envoy()
            self.envoy.child.stop(signal.SIGTERM, ENVOY_STOP_SECONDS)
        logger.info("stopped")
        return 0

    def _drain_envoy(self) -> None:
        """Before Envoy exits: GOAWAY to the callers, then wait (bounded) until no call is in
        flight through it, so its exit cuts no accepted call. A second stop signal cuts it short."""
        started = time.monotonic()
        try:
            self.admin.drain_listeners()
        except AdminUnavailable as error:
            logger.warning("Envoy did not start its drain (%s); stopping it anyway", error)
            return

        def drained() -> bool:
            if time.monotonic() - started < DRAIN_TIME_SECONDS:
                return False
            try:
                active = self.admin.stats(INGRESS_ACTIVE_STAT).get(INGRESS_ACTIVE_STAT, 0)
            except AdminUnavailable:
                return True
            return active == 0

        if self._wait(drained, DRAIN_TIME_SECONDS + ENVOY_DRAIN_MARGIN_SECONDS):
            logger.info("Envoy drained its callers' connections")

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll ``done`` until true (True), ``timeout`` s pass or a new stop signal arrives (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            if self._stop_requested():
                return False
            time.sleep(TICK_SECONDS)
        return done()
