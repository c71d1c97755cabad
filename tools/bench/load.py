"""The load generator: grpc.aio in one or more processes, closed loop or open (Poisson) loop.

Each generator process keeps its event loop busy with nothing but sending precomputed request
bytes (:mod:`payload`) and timing answers; responses are not parsed. A run has a warm-up and then a
measurement *window* of fixed monotonic start and end (``time.monotonic()`` is one clock for every
process of the host): throughput and latency count the successes that complete inside the window,
errors count every request of the run, and each process reports its own CPU seconds in the window.

- Closed loop: ``concurrency`` callers, each sending its next request as soon as the last answers.
- Open loop: requests scheduled at exponential inter-arrival times for ``rate`` requests/s, however
  slowly the server answers. Latency runs from the *scheduled* send time, so a stalled server or
  generator is not hidden (no coordinated omission). At most ``max_in_flight`` requests wait at
  once; a request that would exceed it is not sent and counts as the error ``NOT_SENT_IN_FLIGHT_CAP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import random
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Literal

import grpc
import grpc.aio
import numpy as np

from tensorgate.tools.bench.payload import PayloadSpec, RequestSource

log = logging.getLogger(__name__)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
NOT_SENT = "NOT_SENT_IN_FLIGHT_CAP"
#: how long a generator process may take to start and connect
READY_TIMEOUT_S = 60.0
#: time given to requests still in flight at the end of a run, beyond their own timeout
DRAIN_MARGIN_S = 5.0
#: delay between the parent fixing the start and the processes starting, so all start together
START_DELAY_S = 0.05
TICK_S = 0.2
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Mode = Literal["closed", "open"]


@dataclass(frozen=True)
class LoadSpec:
    """One run of the load: what to send, where, how hard and for how long."""

    targets: tuple[str, ...]
    payload: PayloadSpec
    mode: Mode = "closed"
    concurrency: int = 1
    rate: float = 0.0
    warmup_s: float = 1.0
    duration_s: float = 5.0
    channels: int = 1
    timeout_s: float = 30.0
    max_in_flight: int = 4096

    def split(self, processes: int) -> list[LoadSpec]:
        """Shares of this load for up to ``processes`` processes (none with nothing to do)."""
        if self.mode == "closed":
            count = max(1, min(processes, self.concurrency))
            shares = [
                self.concurrency // count + (1 if i < self.concurrency % count else 0)
                for i in range(count)
            ]
            return [replace(self, concurrency=c) for c in shares]
        count = max(1, processes)
        return [
            replace(self, rate=self.rate / count, max_in_flight=max(1, self.max_in_flight // count))
            for _ in range(count)
        ]


@dataclass(frozen=True)
class Window:
    """The measured part of a run, in ``time.monotonic()`` seconds."""

    start: float
    end: float


@dataclass
class LoadResult:
    """What the generator saw: latencies (s) of the successes completed inside the window, errors
    by gRPC status name over the whole run, its own CPU seconds inside the window, and (open loop)
    how late each request of the window was sent after its scheduled time."""

    latencies: np.ndarray
    errors: dict[str, int]
    cpu_s: float
    send_lag: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def merge(cls, parts: Sequence[LoadResult]) -> LoadResult:
        errors: Counter[str] = Counter()
        for part in parts:
            errors.update(part.errors)
        return cls(
            latencies=np.concatenate([p.latencies for p in parts]),
            errors=dict(errors),
            cpu_s=sum(p.cpu_s for p in parts),
            send_lag=np.concatenate([p.send_lag for p in parts]),
        )


class _Recorder:
    def __init__(self, window: Window) -> None:
        self.window = window
        self.latencies: list[float] = []
        self.send_lag: list[float] = []
        self.errors: Counter[str] = Counter()
        self.cpu_marks: list[float] = []

    def done(self, began: float, code: str | None) -> None:
        if code is not None:
            self.errors[code] += 1
            return
        now = time.monotonic()
        if self.window.start <= now < self.window.end:
            self.latencies.append(now - began)

    def mark_cpu(self) -> None:
        self.cpu_marks.append(time.process_time())

    def result(self) -> LoadResult:
        cpu = self.cpu_marks[1] - self.cpu_marks[0] if len(self.cpu_marks) == 2 else 0.0
        return LoadResult(
            np.asarray(self.latencies), dict(self.errors), cpu, np.asarray(self.send_lag)
        )


Call = Callable[..., Any]


async def _send(call: Call, payload: bytes, timeout: float) -> str | None:
    """Sends one request; None on success, else the gRPC status name."""
    try:
        await call(payload, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return None


async def _closed_caller(
    call: Call, source: RequestSource, recorder: _Recorder, timeout: float
) -> None:
    end = recorder.window.end
    while (began := time.monotonic()) < end:
        recorder.done(began, await _send(call, source.next(), timeout))


async def _scheduled(
    call: Call, payload: bytes, recorder: _Recorder, scheduled: float, timeout: float
) -> None:
    recorder.done(scheduled, await _send(call, payload, timeout))


async def _open_loop(
    calls: Sequence[Call], source: RequestSource, recorder: _Recorder, spec: LoadSpec
) -> set[asyncio.Task[None]]:
    """Sends on schedule until the window ends; returns the requests still in flight."""
    in_flight: set[asyncio.Task[None]] = set()
    arrivals = random.Random()
    window = recorder.window
    scheduled = time.monotonic()
    index = 0
    while scheduled < window.end:
        # behind schedule, send at once, but still let the loop read answers
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        if len(in_flight) >= spec.max_in_flight:
            recorder.errors[NOT_SENT] += 1
        else:
            now = time.monotonic()
            if window.start <= scheduled < window.end:
                recorder.send_lag.append(now - scheduled)
            call = calls[index % len(calls)]
            task = asyncio.create_task(
                _scheduled(call, source.next(), recorder, scheduled, spec.timeout_s)
            )
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            index += 1
        scheduled += arrivals.expovariate(spec.rate)
    return in_flight


def _channel(target: str) -> grpc.aio.Channel:
    # a local subchannel pool gives every channel its own HTTP/2 connection
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ],
    )


async def _generate(spec: LoadSpec, conn: Connection) -> LoadResult:
    """Connects, reports ready, waits for the window from the parent, runs the load."""
    source = RequestSource(spec.payload)
    count = max(1, spec.channels)
    channels = [_channel(spec.targets[i % len(spec.targets)]) for i in range(count)]
    loop = asyncio.get_running_loop()
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        # bytes in, bytes out: no serializers, and answers are never parsed
        calls = [channel.unary_unary(MODEL_INFER) for channel in channels]
        conn.send("ready")
        window: Window = await loop.run_in_executor(None, _receive, conn, READY_TIMEOUT_S)
        recorder = _Recorder(window)
        loop.call_at(window.start, recorder.mark_cpu)  # the loop's clock is time.monotonic()
        loop.call_at(window.end, recorder.mark_cpu)
        await asyncio.sleep(max(0.0, window.start - spec.warmup_s - time.monotonic()))
        if spec.mode == "closed":
            tasks = {
                asyncio.create_task(
                    _closed_caller(calls[i % count], source, recorder, spec.timeout_s)
                )
                for i in range(spec.concurrency)
            }
        else:
            tasks = await _open_loop(calls, source, recorder, spec)
        if tasks:
            drain = max(0.0, window.end - time.monotonic()) + spec.timeout_s + DRAIN_MARGIN_S
            _, late = await asyncio.wait(tasks, timeout=drain)
            for task in late:
                task.cancel()
        if len(recorder.cpu_marks) < 2:
            recorder.mark_cpu()
        return recorder.result()
    finally:
        for channel in channels:
            await channel.close()


def _generator_main(conn: Connection) -> None:
    """A generator process: runs each LoadSpec it receives until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    while True:
        try:
            spec = conn.recv()
        except EOFError:  # the parent has gone
            return
        if spec is None:
            return
        try:
            conn.send(asyncio.run(_generate(spec, conn)))
        except Exception:
            conn.send(RuntimeError(f"load generator failed:\n{traceback.format_exc()}"))


def _receive(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"a load generator process did not answer within {timeout:.0f}s")
    message = conn.recv()
    if isinstance(message, Exception):
        raise message
    return message


class GeneratorPool:
    """Load generator processes, started once and reused by every run; use ``with``.

    Spawned, not forked: the parent may hold threads and gRPC channels that a fork would copy.
    """

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[Any, Connection]] = []
        for index in range(processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_generator_main, args=(child,), name=f"bench-generator-{index}", daemon=True
            )
            process.start()
            child.close()
            self._workers.append((process, parent))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._workers]

    def run(
        self,
        spec: LoadSpec,
        on_window: Callable[[Window], None] = lambda window: None,
        on_tick: Callable[[], None] = lambda: None,
    ) -> LoadResult:
        """Runs ``spec`` split over the processes; ``on_window`` is told the window once it is
        fixed, and ``on_tick`` is called a few times a second while the load runs."""
        shares = spec.split(len(self._workers))
        active = self._workers[: len(shares)]
        for (_, conn), share in zip(active, shares, strict=True):
            conn.send(share)
        for _, conn in active:
            if _receive(conn, READY_TIMEOUT_S) != "ready":
                raise RuntimeError("a load generator process sent an unexpected message")
        start = time.monotonic() + START_DELAY_S + spec.warmup_s
        window = Window(start, start + spec.duration_s)
        for _, conn in active:
            conn.send(window)
        on_window(window)
        deadline = window.end + spec.timeout_s + 2 * DRAIN_MARGIN_S
        results = []
        for _, conn in active:
            while not conn.poll(TICK_S) and time.monotonic() < deadline:
                on_tick()
            results.append(_receive(conn, max(0.0, deadline - time.monotonic())))
        return LoadResult.merge(results)

    def close(self) -> None:
        for _, conn in self._workers:
            with contextlib.suppress(OSError):  # a process that has gone
                conn.send(None)
        for process, conn in self._workers:
            process.join(5)
            if process.is_alive():
                log.warning("load generator %s did not stop; terminating it", process.pid)
                process.terminate()
                process.join(5)
            conn.close()

    def __enter__(self) -> GeneratorPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
