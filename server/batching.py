"""Dynamic batching: concurrent requests become one model run, and each caller gets its own rows.

One :class:`DynamicBatcher` serves one model. A bounded FIFO queue feeds one worker thread per
runner (a model instance). A worker takes the oldest live request (the *head*) and the compatible
requests queued after it, in order, up to ``max_batch_size`` rows, concatenates their inputs along
axis 0, runs them once and hands each caller a view of its own rows of every output.

The caller runs when the model is idle: without a queue delay, when nothing is queued and an
instance is free, ``submit()`` claims that instance and runs the request in the calling thread, and
returns a completed future. This saves the two thread handoffs (to a worker and back) that cost tens
of microseconds of CPU each under the GIL. An instance is used by one thread at a time: its worker
or a caller, never both.

Compatible means the same input names, dtypes and non-batch dimensions, and the same requested
outputs. An incompatible request stays queued in place; the head always runs in the next batch,
so no request waits behind more batches than there are requests ahead of it.

Policy:

* Greedy by default (``max_queue_delay_us == 0``): a request that finds the model idle runs at
  once in its caller, so low load adds no latency; arrivals during a run queue up, and the first
  instance to come free runs them as the next batch on its worker.
* ``max_queue_delay_us > 0``: every request goes through the queue, and a worker waits up to that
  long, counted from the head's arrival, for a fuller batch. It stops early when the batch is full,
  when the next compatible request does not fit, when a preferred size is reached, or when the
  batcher closes.
* ``preferred_batch_sizes``: the batch is cut at the largest preferred size that a prefix of the
  selected requests sums to exactly; with none reachable, every selected request runs.
* A request with more rows than ``max_batch_size`` runs alone, in runs of at most
  ``max_batch_size`` rows one after the other on its instance; its caller gets one answer.
* No merging at all when the model has no dynamic batch dimension, ``max_batch_size == 0`` or
  batching is disabled (nor any queue delay): a request runs in its caller when an instance is idle,
  and otherwise queues, so the queue's bound and deadlines apply.

Callers on an asyncio event loop (the ``grpc.aio`` core) pass ``loop``: their requests always queue
(the loop thread never runs a model), the worker is woken once per loop iteration for all the
requests queued in it (so the calls that gRPC hands over together form one batch, with no delay
added), and each finished run resolves the asyncio futures of all
its waiters on that loop in one ``loop.call_soon_threadsafe`` callback: one wake-up per batch.

A request whose deadline (``time.monotonic()``) has passed on arrival, or when a worker reaches it
in the queue, is dropped with :class:`DeadlineExceededError`. ``Future.cancel()`` takes a queued
request off the queue; a request that has started (on a worker or in its caller) cannot be
cancelled. An exception from a run is set on the future of every request of that batch, and of no
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tensorgate.server.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelUnavailableError,
    ResourceExhaustedError,
    TensorgateError,
)
from tensorgate.server.model_config import DynamicBatchingConfig

__all__ = ["BatchEvent", "BatchObserver", "BatchRequest", "DynamicBatcher", "Feed", "Runner"]

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
#: Runs the model on a feed (batch along axis 0) for the requested outputs (all when empty) and
#: returns output name -> array with the same batch size along axis 0.
Runner = Callable[[Feed, tuple[str, ...]], Feed]


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One successful run: its rows (1 when merging is off), each request's time in the queue,
    the run's duration, and each request's trace context (None where untraced)."""

    batch_size: int
    queue_seconds: Sequence[float]
    compute_seconds: float
    trace_contexts: Sequence[object]


class BatchObserver(Protocol):
    """Hooks for metrics and tracing. Called from worker and caller threads; must not block."""

    def on_batch(self, event: BatchEvent) -> None:
        """A run succeeded."""

    def on_reject(self, reason: str) -> None:
        """A request was not computed: ``queue_full``, ``deadline`` or ``cancelled``."""


class BatchRequest(Future[Feed]):
    """A request, and the future its caller waits on: ``cancel()`` dequeues a queued one at once."""

    def __init__(
        self,
        batcher: DynamicBatcher,
        inputs: Feed,
        outputs: tuple[str, ...],
        key: Hashable | None,
        rows: int,
        deadline: float | None,
        trace_context: object | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        super().__init__()
        self.batcher = batcher
        self.inputs = inputs
        self.outputs = outputs
        self.key = key  # None: never merged with another request
        self.rows = rows
        self.deadline = deadline
        self.trace_context = trace_context
        self.arrival = time.monotonic()
        self.queued = False  # guarded by the batcher's lock; True while in the queue
        #: the asyncio future a loop-side caller awaits; resolved on its loop (see _wake_loops)
        self.waiter: asyncio.Future[Feed] | None = loop.create_future() if loop else None
        self.loop = loop

    def cancel(self) -> bool:
        if self.cancelled():
            return True
        if not super().cancel():
            return False
        self.batcher._on_cancel(self)
        return True


def _batch_key(inputs: Feed, outputs: tuple[str, ...]) -> tuple[Hashable | None, int]:
    """What a request must share with others to merge, and its number of rows."""
    rows = -1
    parts = []
    for name, array in inputs.items():
        shape = array.shape
        if not shape:
            raise InvalidInputError(f"input '{name}' is a scalar: it has no batch dimension")
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInputError(
                f"inputs disagree on the batch size: '{name}' has {shape[0]} rows, not {rows}"
            )
        parts.append((name, array.dtype, shape[1:]))
    if rows < 0:
        return None, 0
    if len(parts) > 1:
        parts.sort(key=lambda part: part[0])
    return (outputs, *parts), rows


class DynamicBatcher:
    """Merges concurrent requests for one model into runs of its runners (see the module doc)."""

    def __init__(
        self,
        name: str,
        runners: Sequence[Runner],
        *,
        max_batch_size: int,
        config: DynamicBatchingConfig,
        batchable: bool,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        self.name = name
        self._merge = batchable and config.enabled and max_batch_size > 0
        self._max_batch = max_batch_size
        self._delay = config.max_queue_delay_us / 1e6 if self._merge else 0.0
        self._preferred = frozenset(
            size for size in config.preferred_batch_sizes if 0 < size <= max_batch_size
        )
        if self._merge and len(self._preferred) < len(set(config.preferred_batch_sizes)):
            log.warning(
                "model %s: preferred batch sizes above max_batch_size %d are ignored",
                name,
                max_batch_size,
            )
        self._max_queue = config.max_queue_size
        self._observers = tuple(observers)
        self._runners = tuple(runners)
        self._lock = threading.Lock()
        self._queue: deque[BatchRequest] = deque()  # may hold dead entries (queued False)
        self._live = 0  # requests with queued True
        self._closing = False
        # Per instance, all guarded by the lock: in use (by its worker or by a caller), its worker
        # waits for a notification it has not had yet, and the condition that worker waits on.
        self._busy = [False] * len(runners)
        self._waiting = [False] * len(runners)
        self._wakeups = [threading.Condition(self._lock) for _ in runners]
        self._wake_scheduled = False  # a loop caller has scheduled _wake_from_loop
        self._caller_runs = 0  # requests running in their callers' threads now
        self._callers_done = threading.Condition(self._lock)  # close() waits on it for those runs
        self._threads = [
            threading.Thread(
                target=self._work, args=(index,), name=f"batcher-{name}-{index}", daemon=True
            )
            for index in range(len(runners))
        ]
        for thread in self._threads:
            thread.start()

    def add_observer(self, observer: BatchObserver) -> None:
        """One more observer of every run and rejection (tracing, once the model is known)."""
        self._observers = (*self._observers, observer)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a worker (not those being computed)."""
        return self._live

    def submit(
        self,
        inputs: Feed,
        outputs: tuple[str, ...],
        *,
        deadline: float | None = None,
        trace_context: object | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> BatchRequest:
        """Runs the request in this thread when the model is idle (never for a ``loop`` caller),
        or queues it; the future (and its ``waiter`` on ``loop``) gets its rows of every output,
        or the error.

        Raises ResourceExhaustedError when the queue is full, ModelUnavailableError once closed,
        InvalidInputError when the inputs disagree on the batch size (batching models only).
        """
        key, rows = _batch_key(inputs, outputs) if self._merge else (None, 0)
        request = BatchRequest(self, inputs, outputs, key, rows, deadline, trace_context, loop)
        if deadline is not None and deadline <= request.arrival:
            request.set_exception(DeadlineExceededError("the deadline passed before queueing"))
            self._wake_loops([request])
            self._report_reject("deadline")
            return request
        with self._lock:
            if self._closing:
                raise ModelUnavailableError(f"model '{self.name}' is unloading")
            instance = None if loop is not None else self._claim_idle_instance()
            if instance is None and self._live < self._max_queue:
                request.queued = True
                self._queue.append(request)
                self._live += 1
                if loop is None:
                    self._wake_worker()
                elif not self._wake_scheduled:
                    # once per loop iteration: the requests that arrive in it meet in the queue,
                    # and the worker is woken once for all of them
                    self._wake_scheduled = True
                    loop.call_soon(self._wake_from_loop)
                return request
        if instance is None:
            self._report_reject("queue_full")
            raise ResourceExhaustedError(
                f"the queue of model '{self.name}' is full ({self._max_queue} requests)"
            )
        try:
            self._run(self._runners[instance], [request], queued=False)
        finally:
            self._release(instance)
        return request

    def _wake_from_loop(self) -> None:
        with self._lock:
            self._wake_scheduled = False
            self._wake_worker()

    def close(self, timeout: float) -> None:
        """Stops accepting, lets the workers finish what was accepted and the callers their runs,
        and joins the workers.

        Requests still queued when ``timeout`` runs out get ModelUnavailableError.
        """
        end = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            self._wake_all()
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        queued: list[BatchRequest] = []
        with self._lock:
            while self._caller_runs and (left := end - time.monotonic()) > 0:
                self._callers_done.wait(left)
            running = self._caller_runs
            if stuck:  # otherwise the workers have emptied the queue
                queued = [request for request in self._queue if request.queued]
                for request in queued:
                    request.queued = False
                self._queue.clear()
                self._live = 0
                self._wake_all()  # a worker that waits for an instance a caller holds can leave
        if not (stuck or running):
            return
        log.warning(
            "model %s: workers %s and %d caller runs still running after %.1f s; "
            "failing %d queued requests",
            self.name,
            stuck,
            running,
            timeout,
            len(queued),
        )
        for request in queued:
            if request.set_running_or_notify_cancel():
                request.set_exception(ModelUnavailableError(f"model '{self.name}' was unloaded"))
        self._wake_loops(queued)

    # -- worker side

    def _work(self, instance: int) -> None:
        runner = self._runners[instance]
        ran = False
        while True:
            with self._lock:
                if ran:
                    self._busy[instance] = False
                taken = self._take(instance)
            if taken is None:
                return
            batch, expired = taken
            for request in expired:
                self._expire(request)
            ran = bool(batch)
            if batch:
                self._run(runner, batch)

    def _take(self, instance: int) -> tuple[list[BatchRequest], list[BatchRequest]] | None:
        """With the lock held: waits for the next batch and marks the instance busy; None once
        closed and drained.

        Returns (batch, expired); the batch is empty when only expired requests were found, so
        that their callers hear at once rather than after a wait.
        """
        expired: list[BatchRequest] = []
        while True:
            queue = self._queue
            now = time.monotonic()
            while queue:
                head = queue[0]
                if not head.queued:
                    queue.popleft()
                elif head.deadline is not None and head.deadline <= now:
                    queue.popleft()
                    head.queued = False
                    self._live -= 1
                    expired.append(head)
                else:
                    break
            if not queue or self._busy[instance]:  # busy: a caller runs on it and will wake us
                if expired:
                    return [], expired
                if not queue and self._closing:
                    return None
                self._wait(instance, None)
                continue
            if head.key is None or head.rows >= self._max_batch:
                batch = [head]
            else:
                batch, wait = self._select(head, now)
                if not batch:
                    if expired:
                        return [], expired
                    self._wait(instance, wait)
                    continue
            for request in batch:
                request.queued = False
            self._live -= len(batch)
            self._busy[instance] = True
            self._drop_dead()
            if self._live:
                self._wake_worker()
            return batch, expired

    def _drop_dead(self) -> None:
        """With the lock held: removes taken and cancelled entries from the head, and compacts
        the queue when they (left behind by out-of-order batches) outnumber the live ones."""
        queue = self._queue
        while queue and not queue[0].queued:
            queue.popleft()
        if len(queue) > 2 * self._live + 64:
            alive = [request for request in queue if request.queued]
            queue.clear()  # in place, so that no reference to the queue goes stale
            queue.extend(alive)

    def _wait(self, instance: int, timeout: float | None) -> None:
        self._waiting[instance] = True
        try:
            self._wakeups[instance].wait(timeout)
        finally:
            self._waiting[instance] = False

    def _notify(self, instance: int) -> None:
        """With the lock held: wakes the worker of an instance if it waits and is not yet woken."""
        if self._waiting[instance]:
            self._waiting[instance] = False
            self._wakeups[instance].notify()

    def _wake_worker(self) -> None:
        """With the lock held: wakes one waiting worker whose instance is free, if any."""
        for instance, waiting in enumerate(self._waiting):
            if waiting and not self._busy[instance]:
                self._notify(instance)
                return

    def _wake_all(self) -> None:
        for instance in range(len(self._wakeups)):
            self._notify(instance)

    def _select(self, head: BatchRequest, now: float) -> tuple[list[BatchRequest], float]:
        """The batch the head leads now, or ([], seconds to wait) while a fuller one may form."""
        key = head.key
        limit = self._max_batch
        picked: list[BatchRequest] = []
        sums: list[int] = []
        total = 0
        blocked = False
        for request in self._queue:
            if not request.queued or request.key != key:
                continue
            if request.deadline is not None and request.deadline <= now:
                continue  # dropped when it reaches the head
            if total + request.rows > limit:
                blocked = True
                break
            picked.append(request)
            total += request.rows
            sums.append(total)
            if total == limit:
                break
        cut = 0
        if self._preferred:
            for index in range(len(sums) - 1, -1, -1):
                if sums[index] in self._preferred:
                    cut = index + 1
                    break
        if self._delay and not (cut or blocked or total == limit or self._closing):
            wait = head.arrival + self._delay - now
            if wait > 0:
                return [], wait
        return (picked[:cut] if cut else picked), 0.0

    def _run(self, runner: Runner, batch: list[BatchRequest], *, queued: bool = True) -> None:
        started = time.monotonic()
        # A caller that cancelled after the batch was taken is left out here.
        batch = [request for request in batch if request.set_running_or_notify_cancel()]
        if not batch:
            return
        first = batch[0]
        if len(batch) == 1:
            feed = first.inputs
        else:
            feed = {
                name: np.concatenate([request.inputs[name] for request in batch])
                for name in first.inputs
            }
        try:
            computing = time.monotonic()
            if self._merge and first.rows > self._max_batch:
                result = self._run_in_parts(runner, feed, first.outputs, first.rows)
            else:
                result = runner(feed, first.outputs)
            compute = time.monotonic() - computing
            parts = [result] if len(batch) == 1 else self._split(batch, result)
        except Exception as exc:
            for request in batch:
                request.set_exception(exc)
            self._wake_loops(batch)
            return
        self._observe(batch, started, compute, queued)  # first: statistics include this run
        for request, part in zip(batch, parts, strict=True):
            request.set_result(part)
        self._wake_loops(batch)

    def _observe(
        self, batch: list[BatchRequest], started: float, compute: float, queued: bool
    ) -> None:
        if not self._observers:
            return
        event = BatchEvent(
            sum(request.rows for request in batch) if self._merge else 1,
            [started - request.arrival for request in batch] if queued else [0.0],
            compute,
            [request.trace_context for request in batch],
        )
        for observer in self._observers:
            try:
                observer.on_batch(event)
            except Exception:
                log.exception("model %s: batch observer failed", self.name)

    def _run_in_parts(
        self, runner: Runner, feed: Feed, outputs: tuple[str, ...], rows: int
    ) -> Feed:
        """A request above max_batch_size: runs of at most max_batch_size rows, outputs joined."""
        parts = [
            runner(
                {name: array[start : start + self._max_batch] for name, array in feed.items()},
                outputs,
            )
            for start in range(0, rows, self._max_batch)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    @staticmethod
    def _wake_loops(requests: Sequence[BatchRequest]) -> None:
        """One callback per event loop resolves the asyncio waiters of all ``requests`` on it."""
        by_loop: dict[asyncio.AbstractEventLoop, list[BatchRequest]] = {}
        for request in requests:
            if request.loop is not None:
                by_loop.setdefault(request.loop, []).append(request)
        for loop, waiting in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve_waiters, waiting)

    def _split(self, batch: list[BatchRequest], result: Feed) -> list[Feed]:
        """Each request's rows of every output."""
        total = sum(request.rows for request in batch)
        for name, array in result.items():
            if array.shape[:1] != (total,):
                raise TensorgateError(
                    f"model '{self.name}' returned {array.shape[:1]} rows of output '{name}' "
                    f"for a batch of {total}"
                )
        parts = []
        offset = 0
        for request in batch:
            end = offset + request.rows
            parts.append({name: array[offset:end] for name, array in result.items()})
            offset = end
        return parts

    def _expire(self, request: BatchRequest) -> None:
        if request.set_running_or_notify_cancel():
            waited = time.monotonic() - request.arrival
            request.set_exception(
                DeadlineExceededError(f"the deadline passed after {waited * 1e3:.1f} ms in queue")
            )
            self._wake_loops([request])
            self._report_reject("deadline")

    # -- caller side

    def _claim_idle_instance(self) -> int | None:
        """With the lock held: an instance for the caller to run on, marked busy; None when a
        queue delay is set, requests are queued (they go first) or every instance is busy."""
        if self._delay or self._live:
            return None
        for index, busy in enumerate(self._busy):
            if not busy:
                self._busy[index] = True
                self._caller_runs += 1
                return index
        return None

    def _release(self, instance: int) -> None:
        """Gives back an instance after a caller's run; its worker takes what queued meanwhile."""
        with self._lock:
            self._busy[instance] = False
            self._caller_runs -= 1
            if self._live or self._closing:
                self._notify(instance)
            if self._closing and not self._caller_runs:
                self._callers_done.notify_all()

    def _on_cancel(self, request: BatchRequest) -> None:
        with self._lock:
            if request.queued:
                request.queued = False
                self._live -= 1
                self._drop_dead()
        self._report_reject("cancelled")

    def _report_reject(self, reason: str) -> None:
        for observer in self._observers:
            try:
                observer.on_reject(reason)
            except Exception:
                log.exception("model %s: batch observer failed", self.name)


def _resolve_waiters(requests: list[BatchRequest]) -> None:
    """On the loop: hands each request's result or error to the coroutine that awaits it."""
    for request in requests:
        waiter = request.waiter
        if waiter is None or waiter.done():
            continue
        if request.cancelled():
            waiter.cancel()
        elif (error := request.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(request.result())
