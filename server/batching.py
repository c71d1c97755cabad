"""Dynamic batching: concurrent requests become one model run, and each caller gets its own rows.

One :class:`DynamicBatcher` serves one model. A bounded FIFO queue feeds one worker thread per
runner (a model instance). A worker takes the oldest live request (the *head*) and the compatible
requests queued after it, in order, up to ``max_batch_size`` rows, concatenates their inputs along
axis 0, runs them once and hands each caller a view of its own rows of every output.

Compatible means the same input names, dtypes and non-batch dimensions, and the same requested
outputs. An incompatible request stays queued in place; the head always runs in the next batch,
so no request waits behind more batches than there are requests ahead of it.

Policy:

* Greedy by default (``max_queue_delay_us == 0``): an idle worker runs the head at once, so low load
  adds no latency; arrivals during a run queue up and form the next batch.
* ``max_queue_delay_us > 0``: a worker waits up to that long, counted from the head's arrival, for a
  fuller batch. It stops early when the batch is full, when the next compatible request does not
  fit, when a preferred size is reached, or when the batcher closes.
* ``preferred_batch_sizes``: the batch is cut at the largest preferred size that a prefix of the
  selected requests sums to exactly; with none reachable, every selected request runs.
* A request with more rows than ``max_batch_size`` runs alone: the batcher does not reject it, the
  server's input validation may.
* No merging at all when the model has no dynamic batch dimension, ``max_batch_size == 0`` or
  batching is disabled; requests still go through the queue, so its bound and deadlines apply.

A request whose deadline (``time.monotonic()``) has passed when a worker reaches it is dropped with
:class:`DeadlineExceededError`. ``Future.cancel()`` takes a queued request off the queue; a request
that a worker has already started cannot be cancelled. An exception from a run is set on the future
of every request of that batch, and of no other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
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

__all__ = ["BatchObserver", "DynamicBatcher", "Feed", "Runner"]

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
#: Runs the model on a feed (batch along axis 0) for the requested outputs (all when empty) and
#: returns output name -> array with the same batch size along axis 0.
Runner = Callable[[Feed, tuple[str, ...]], Feed]


class BatchObserver(Protocol):
    """Hooks for metrics and tracing. Called from worker and caller threads; must not block."""

    def on_batch(
        self,
        batch_size: int,
        queue_seconds: Sequence[float],
        compute_seconds: float,
        trace_contexts: Sequence[object],
    ) -> None:
        """A run succeeded: its rows (1 when merging is off), each request's time in the queue,
        and the run's duration."""

    def on_reject(self, reason: str) -> None:
        """A request was not computed: ``queue_full``, ``deadline`` or ``cancelled``."""


class _Request(Future[Feed]):
    """A queued request, and the future its caller waits on: ``cancel()`` dequeues it at once."""

    def __init__(
        self,
        batcher: DynamicBatcher,
        inputs: Feed,
        outputs: tuple[str, ...],
        key: Hashable | None,
        rows: int,
        deadline: float | None,
        trace_context: object | None,
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
        self.queued = True  # guarded by the batcher's lock; False once taken or cancelled

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
        observer: BatchObserver | None = None,
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
        self._observer = observer
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Request] = deque()  # may hold dead entries (queued False)
        self._live = 0  # requests with queued True
        self._idle = 0  # workers waiting on the condition
        self._closing = False
        self._threads = [
            threading.Thread(
                target=self._work, args=(runner,), name=f"batcher-{name}-{index}", daemon=True
            )
            for index, runner in enumerate(runners)
        ]
        for thread in self._threads:
            thread.start()

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
    ) -> Future[Feed]:
        """Queues a request; the future gets its rows of every output, or the error.

        Raises ResourceExhaustedError when the queue is full, ModelUnavailableError once closed,
        InvalidInputError when the inputs disagree on the batch size (batching models only).
        """
        key, rows = _batch_key(inputs, outputs) if self._merge else (None, 0)
        request = _Request(self, inputs, outputs, key, rows, deadline, trace_context)
        if deadline is not None and deadline <= request.arrival:
            request.set_exception(DeadlineExceededError("the deadline passed before queueing"))
            self._report_reject("deadline")
            return request
        with self._cond:
            if self._closing:
                raise ModelUnavailableError(f"model '{self.name}' is unloading")
            if self._live < self._max_queue:
                self._queue.append(request)
                self._live += 1
                if self._idle:
                    self._cond.notify()
                return request
        self._report_reject("queue_full")
        raise ResourceExhaustedError(
            f"the queue of model '{self.name}' is full ({self._max_queue} requests)"
        )

    def close(self, timeout: float) -> None:
        """Stops accepting, lets the workers finish what was accepted, and joins them.

        Requests still queued when ``timeout`` runs out get ModelUnavailableError.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if not stuck:
            return
        with self._cond:
            left = [request for request in self._queue if request.queued]
            for request in left:
                request.queued = False
            self._queue.clear()
            self._live = 0
        log.warning(
            "model %s: workers %s still running after %.1f s; failing %d queued requests",
            self.name,
            stuck,
            timeout,
            len(left),
        )
        for request in left:
            if request.set_running_or_notify_cancel():
                request.set_exception(ModelUnavailableError(f"model '{self.name}' was unloaded"))

    # -- worker side

    def _work(self, runner: Runner) -> None:
        while True:
            with self._cond:
                taken = self._take()
            if taken is None:
                return
            batch, expired = taken
            for request in expired:
                self._expire(request)
            if batch:
                self._run(runner, batch)

    def _take(self) -> tuple[list[_Request], list[_Request]] | None:
        """With the lock held: waits for the next batch; None once closed and drained.

        Returns (batch, expired); the batch may be empty when only expired requests were found,
        so that their callers hear at once rather than after a wait.
        """
        expired: list[_Request] = []
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
            if not queue:
                if expired:
                    return [], expired
                if self._closing:
                    return None
                self._wait(None)
                continue
            if head.key is None or head.rows >= self._max_batch:
                batch = [head]
            else:
                batch, wait = self._select(head, now)
                if not batch:
                    if expired:
                        return [], expired
                    self._wait(wait)
                    continue
            for request in batch:
                request.queued = False
            self._live -= len(batch)
            self._drop_dead()
            if self._live and self._idle:
                self._cond.notify()
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

    def _wait(self, timeout: float | None) -> None:
        self._idle += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._idle -= 1

    def _select(self, head: _Request, now: float) -> tuple[list[_Request], float]:
        """The batch the head leads now, or ([], seconds to wait) while a fuller one may form."""
        key = head.key
        limit = self._max_batch
        picked: list[_Request] = []
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

    def _run(self, runner: Runner, batch: list[_Request]) -> None:
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
            result = runner(feed, first.outputs)
            compute = time.monotonic() - computing
            if len(batch) == 1:
                first.set_result(result)
            else:
                self._split(batch, result)
        except Exception as exc:
            for request in batch:
                if not request.done():
                    request.set_exception(exc)
            return
        if self._observer is not None:
            try:
                self._observer.on_batch(
                    sum(request.rows for request in batch) if self._merge else 1,
                    [started - request.arrival for request in batch],
                    compute,
                    [request.trace_context for request in batch],
                )
            except Exception:
                log.exception("model %s: batch observer failed", self.name)

    def _split(self, batch: list[_Request], result: Feed) -> None:
        total = sum(request.rows for request in batch)
        for name, array in result.items():
            if array.shape[:1] != (total,):
                raise TensorgateError(
                    f"model '{self.name}' returned {array.shape[:1]} rows of output '{name}' "
                    f"for a batch of {total}"
                )
        offset = 0
        for request in batch:
            end = offset + request.rows
            request.set_result({name: array[offset:end] for name, array in result.items()})
            offset = end

    def _expire(self, request: _Request) -> None:
        if request.set_running_or_notify_cancel():
            waited = time.monotonic() - request.arrival
            request.set_exception(
                DeadlineExceededError(f"the deadline passed after {waited * 1e3:.1f} ms in queue")
            )
            self._report_reject("deadline")

    # -- caller side

    def _on_cancel(self, request: _Request) -> None:
        with self._cond:
            if request.queued:
                request.queued = False
                self._live -= 1
                self._drop_dead()
        self._report_reject("cancelled")

    def _report_reject(self, reason: str) -> None:
        if self._observer is None:
            return
        try:
            self._observer.on_reject(reason)
        except Exception:
            log.exception("model %s: batch observer failed", self.name)
