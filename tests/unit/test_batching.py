"""The dynamic batcher over a real ONNX Runtime session of a small model built here.

Most tests hold the first run in a gate, queue requests behind it, then release it: what is queued
at that moment is exactly known, so which batches form is deterministic. An idle model runs a
request in the thread that submits it, so that first request comes from a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tensorgate.server.batching import BatchEvent, DynamicBatcher, Feed, Runner
from tensorgate.server.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelUnavailableError,
    ResourceExhaustedError,
    TensorgateError,
)
from tensorgate.server.model_config import DynamicBatchingConfig

WAIT = 10.0  # upper bound of every wait in these tests; none is reached when all is well


def build_model() -> bytes:
    """y = 2x + b and s = sum(x, axis 1), with a dynamic batch and a variable feature dim."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "D"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "b"], ["y"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "affine", [x, b], [y, s], initializer=[two, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def session_runner(session: ort.InferenceSession) -> Runner:
    every = tuple(output.name for output in session.get_outputs())

    def run(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        names = list(outputs or every)
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


class Gate:
    """Wraps a real runner: records each run's feed and thread; while closed, runs wait in it."""

    def __init__(
        self, runner: Runner, *, closed: bool = True, opened: threading.Event | None = None
    ) -> None:
        self.runner = runner
        self.feeds: list[Feed] = []
        self.threads: list[str] = []  # the name of the thread of each run
        self._waiting: set[int] = set()  # the idents of the threads waiting in the gate now
        self.entered = threading.Event()
        self.opened = opened or threading.Event()  # gates may share one
        if not closed:
            self.opened.set()
        self._lock = threading.Lock()

    def __call__(self, feed: Feed, outputs: tuple[str, ...]) -> Feed:
        with self._lock:
            self.feeds.append({name: array.copy() for name, array in feed.items()})
            self.threads.append(threading.current_thread().name)
            self._waiting.add(threading.get_ident())
        self.entered.set()
        try:
            if not self.opened.wait(WAIT):
                raise TimeoutError("the gate was never opened")
        finally:
            with self._lock:
                self._waiting.discard(threading.get_ident())
        return self.runner(feed, outputs)

    def open(self) -> None:
        self.opened.set()

    @property
    def waiting(self) -> set[int]:
        """The idents of the threads whose runs wait in the gate now."""
        with self._lock:
            return set(self._waiting)

    @property
    def batches(self) -> list[list[int]]:
        """The request ids (column b) of each run, row by row, in run order."""
        with self._lock:
            return [feed["b"][:, 0].astype(int).tolist() for feed in self.feeds]


class Recorder:
    """A BatchObserver that remembers what it saw."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []
        self.contexts: list[object] = []
        self.rejects: list[str] = []

    def on_batch(self, event: BatchEvent) -> None:
        assert all(seconds >= 0 for seconds in event.queue_seconds) and event.compute_seconds >= 0
        self.sizes.append(event.batch_size)
        self.waits.extend(event.queue_seconds)
        self.contexts.extend(event.trace_contexts)

    def on_reject(self, reason: str) -> None:
        self.rejects.append(reason)


def request(rid: int, rows: int = 1, d: int = 3, seed: int | None = None) -> Feed:
    """A request whose column b carries its id, so that the runs show whose rows they held."""
    rng = np.random.default_rng(rid if seed is None else seed)
    return {
        "x": rng.standard_normal((rows, d), dtype=np.float32),
        "b": np.full((rows, 1), rid, dtype=np.float32),
    }


@pytest.fixture(scope="module")
def model() -> bytes:
    return build_model()


@pytest.fixture(scope="module")
def session(model: bytes) -> ort.InferenceSession:
    return make_session(model)


MakeBatcher = Callable[..., DynamicBatcher]


@pytest.fixture
def make_batcher() -> Iterator[MakeBatcher]:
    """Builds batchers; closes them at teardown and checks that their threads are gone."""
    made: list[DynamicBatcher] = []

    def make(
        runners: Sequence[Runner],
        *,
        name: str = "affine",
        max_batch_size: int = 8,
        batchable: bool = True,
        recorder: Recorder | None = None,
        **config: object,
    ) -> DynamicBatcher:
        batcher = DynamicBatcher(
            name,
            runners,
            max_batch_size=max_batch_size,
            config=DynamicBatchingConfig.model_validate(config),
            batchable=batchable,
            observers=[recorder] if recorder is not None else [],
        )
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(WAIT)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("batcher-")]


def expected(session: ort.InferenceSession, inputs: Feed, outputs: tuple[str, ...]) -> Feed:
    """The unbatched answer: the same model run on this request's inputs alone."""
    return session_runner(session)(inputs, outputs)


def assert_same(result: Feed, want: Feed) -> None:
    assert result.keys() == want.keys()
    if "y" in want:  # elementwise: exact whatever the batch
        np.testing.assert_array_equal(result["y"], want["y"])
    if "s" in want:  # a reduction: its kernel may change with the batch size
        np.testing.assert_allclose(result["s"], want["s"], rtol=1e-6, atol=1e-6)


Hold = Callable[[Gate, DynamicBatcher, Feed], Future[Feed]]


@pytest.fixture
def held() -> Iterator[Hold]:
    """Submits a first request from a thread of its own (an idle model runs it in the submitting
    thread) and returns once its run waits in the gate: later requests queue. The future returned
    resolves when that submit has returned."""
    threads: list[threading.Thread] = []

    def hold(gate: Gate, batcher: DynamicBatcher, first: Feed) -> Future[Feed]:
        future: Future[Feed] = Future()

        def submit() -> None:
            try:
                future.set_result(batcher.submit(first, ()).result(WAIT))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=submit, name=f"held-{len(threads)}")
        threads.append(thread)
        thread.start()
        assert gate.entered.wait(WAIT)
        return future

    yield hold
    for thread in threads:
        thread.join(WAIT)
    assert not [thread.name for thread in threads if thread.is_alive()]


# -- merging and splitting


def test_idle_model_runs_each_request_alone(session, make_batcher):
    gate = Gate(session_runner(session), closed=False)
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder)
    for rid in range(3):
        inputs = request(rid)
        assert_same(batcher.submit(inputs, ()).result(WAIT), expected(session, inputs, ()))
    assert gate.batches == [[0], [1], [2]]
    assert recorder.sizes == [1, 1, 1]


def test_queued_requests_merge_and_each_gets_its_own_rows(session, make_batcher, held):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder)
    first = held(gate, batcher, request(0))
    queued = {rid: request(rid, rows) for rid, rows in [(1, 2), (2, 1), (3, 3)]}
    futures = {
        rid: batcher.submit(inputs, (), trace_context=f"trace-{rid}")
        for rid, inputs in queued.items()
    }
    assert batcher.queue_depth == 3
    gate.open()
    first.result(WAIT)
    for rid, inputs in queued.items():
        assert_same(futures[rid].result(WAIT), expected(session, inputs, ()))
    assert gate.batches == [[0], [1, 1, 2, 3, 3, 3]]
    assert recorder.sizes == [1, 6]
    assert recorder.contexts[1:] == ["trace-1", "trace-2", "trace-3"]
    assert batcher.queue_depth == 0


def test_incompatible_requests_stay_queued_in_order(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate])
    first = held(gate, batcher, request(0))
    submitted = [
        (1, request(1, d=3), ()),
        (2, request(2, d=4), ()),  # another feature dim
        (3, request(3, d=3), ()),
        (4, request(4, d=3), ("s",)),  # other outputs
        (5, {"x": request(5)["x"].astype(np.float64), "b": request(5)["b"]}, ()),  # other dtype
        (6, request(6, d=4), ()),
    ]
    futures = [(batcher.submit(inputs, outs), inputs, outs) for _, inputs, outs in submitted]
    gate.open()
    first.result(WAIT)
    results = []
    for future, _inputs, _outs in futures:
        try:
            results.append(future.result(WAIT))
        except Exception as exc:  # the float64 request: the model takes float only
            results.append(exc)
    assert gate.batches == [[0], [1, 3], [2, 6], [4], [5]]
    for result, (_, inputs, outs) in zip(results[:4], submitted[:4], strict=True):
        assert_same(result, expected(session, inputs, outs))
    assert isinstance(results[4], Exception)  # its own batch failed, no one else's


def test_max_batch_size_caps_the_rows_of_a_run(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate], max_batch_size=4)
    first = held(gate, batcher, request(0))
    sizes = {1: 1, 2: 2, 3: 1, 4: 2, 5: 6, 6: 1}
    queued = {rid: request(rid, rows) for rid, rows in sizes.items()}
    futures = {rid: batcher.submit(inputs, ()) for rid, inputs in queued.items()}
    gate.open()
    first.result(WAIT)
    for rid, inputs in queued.items():
        assert_same(futures[rid].result(WAIT), expected(session, inputs, ()))
    # 4 does not fit after 1, 2, 3 (4 rows), and 6 waits for 5, which is too big to share a run:
    # 5 runs alone, in runs of at most 4 rows, and its caller gets one answer (checked above).
    assert gate.batches == [[0], [1, 2, 2, 3], [4, 4], [5] * 4, [5] * 2, [6]]


def test_loop_callers_of_one_batch_are_woken_by_one_loop_callback(session, make_batcher, held):
    """grpc.aio callers await on their loop; a finished batch wakes them all at once."""
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate], max_batch_size=8)
    first = held(gate, batcher, request(0))
    loop = asyncio.new_event_loop()
    callbacks = []
    schedule = loop.call_soon_threadsafe

    def counting(callback, *args):
        callbacks.append(callback)
        return schedule(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        inputs = {rid: request(rid) for rid in (1, 2, 3)}
        queued = {rid: batcher.submit(feed, (), loop=loop) for rid, feed in inputs.items()}
        gate.open()
        first.result(WAIT)
        results = loop.run_until_complete(
            asyncio.wait_for(asyncio.gather(*(r.waiter for r in queued.values())), WAIT)
        )
    finally:
        loop.close()
    assert gate.batches == [[0], [1, 2, 3]]
    assert len(callbacks) == 1
    for result, feed in zip(results, inputs.values(), strict=True):
        assert_same(result, expected(session, feed, ()))


def test_preferred_sizes_cut_the_batch(session, make_batcher, held):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder, preferred_batch_sizes=[2, 4])
    first = held(gate, batcher, request(0))
    futures = [batcher.submit(request(rid), ()) for rid in range(1, 6)]
    gate.open()
    first.result(WAIT)
    for future in futures:
        future.result(WAIT)
    assert recorder.sizes == [1, 4, 1]


def test_queue_delay_waits_for_a_full_batch(session, make_batcher):
    gate = Gate(session_runner(session), closed=False)
    recorder = Recorder()
    # The window is far longer than the test: only a full batch lets the run start.
    batcher = make_batcher(
        [gate], recorder=recorder, max_batch_size=4, max_queue_delay_us=WAIT * 1e6
    )
    futures = [batcher.submit(request(rid), ()) for rid in range(4)]
    for future in futures:
        future.result(WAIT)
    assert recorder.sizes == [4]


def test_queue_delay_stops_at_a_preferred_size(session, make_batcher):
    gate = Gate(session_runner(session), closed=False)
    recorder = Recorder()
    batcher = make_batcher(
        [gate], recorder=recorder, max_queue_delay_us=WAIT * 1e6, preferred_batch_sizes=[3]
    )
    futures = [batcher.submit(request(rid), ()) for rid in range(3)]
    for future in futures:
        future.result(WAIT)
    assert recorder.sizes == [3]


def test_queue_delay_runs_what_it_has_when_the_window_ends(session, make_batcher):
    gate = Gate(session_runner(session), closed=False)
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder, max_queue_delay_us=500_000)
    futures = [batcher.submit(request(rid), ()) for rid in range(3)]
    for future in futures:
        future.result(WAIT)
    assert recorder.sizes == [3]  # not the greedy [1, 2]: the first run waited for the others


@pytest.mark.parametrize(
    ("batchable", "enabled", "max_batch_size"),
    [(False, True, 8), (True, False, 8), (True, True, 0)],
    ids=["no-batch-dim", "disabled", "max-batch-0"],
)
def test_requests_never_merge_when_batching_is_off(
    session, make_batcher, held, batchable, enabled, max_batch_size
):
    gate = Gate(session_runner(session))
    batcher = make_batcher(
        [gate], batchable=batchable, enabled=enabled, max_batch_size=max_batch_size
    )
    first = held(gate, batcher, request(0))
    queued = {rid: request(rid) for rid in range(1, 4)}
    futures = {rid: batcher.submit(inputs, ()) for rid, inputs in queued.items()}
    gate.open()
    first.result(WAIT)
    for rid, inputs in queued.items():
        assert_same(futures[rid].result(WAIT), expected(session, inputs, ()))
    assert gate.batches == [[0], [1], [2], [3]]


def test_inputs_that_disagree_on_rows_are_refused(session, make_batcher):
    batcher = make_batcher([session_runner(session)])
    with pytest.raises(InvalidInputError):
        batcher.submit({"x": np.zeros((2, 3), np.float32), "b": np.zeros((1, 1), np.float32)}, ())


# -- the caller runs when the model is idle


def poison(runner: Runner) -> Runner:
    """Fails, after running, every run that holds the row of request 99."""

    def run(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        result = runner(feed, outputs)
        if (feed["b"] == 99).any():
            raise RuntimeError("poisoned row")
        return result

    return run


def test_an_idle_model_runs_the_request_in_the_callers_thread(session, make_batcher):
    gate = Gate(session_runner(session), closed=False)
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder)
    future = batcher.submit(request(0), ())
    assert future.done()
    assert_same(future.result(0), expected(session, request(0), ()))
    assert not future.cancel()  # it has run
    assert gate.threads == [threading.current_thread().name]
    assert recorder.sizes == [1]
    assert recorder.waits == [0.0]
    assert batcher.queue_depth == 0


def test_arrivals_during_a_callers_run_queue_and_run_as_one_batch_on_the_worker(
    session, make_batcher, held
):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder)
    first = held(gate, batcher, request(0))
    queued = {rid: request(rid, rows) for rid, rows in [(1, 1), (2, 2), (3, 1)]}
    futures = {rid: batcher.submit(inputs, ()) for rid, inputs in queued.items()}
    assert not any(future.done() for future in futures.values())
    assert batcher.queue_depth == 3
    gate.open()
    assert_same(first.result(WAIT), expected(session, request(0), ()))
    for rid, inputs in queued.items():
        assert_same(futures[rid].result(WAIT), expected(session, inputs, ()))
    assert gate.batches == [[0], [1, 2, 2, 3]]
    assert gate.threads == ["held-0", "batcher-affine-0"]
    assert recorder.sizes == [1, 4]


def test_two_instances_run_two_idle_callers_at_once_in_their_threads(model, session, make_batcher):
    opened = threading.Event()
    gates = [Gate(session_runner(make_session(model)), opened=opened) for _ in range(2)]
    batcher = make_batcher(gates)
    results: dict[int, Feed | BaseException] = {}

    def call(rid: int) -> None:
        try:
            future = batcher.submit(request(rid), ())
            assert future.done()
            results[rid] = future.result(0)
        except BaseException as exc:
            results[rid] = exc

    callers = [threading.Thread(target=call, args=(rid,), name=f"caller-{rid}") for rid in range(2)]
    for thread in callers:
        thread.start()
    try:
        # Both runs wait in their gates at the same time: neither caller waits for the other.
        assert all(gate.entered.wait(WAIT) for gate in gates)
    finally:
        opened.set()
        for thread in callers:
            thread.join(WAIT)
    assert not [thread.name for thread in callers if thread.is_alive()]
    for rid in range(2):
        assert_same(results[rid], expected(session, request(rid), ()))
    assert sorted(name for gate in gates for name in gate.threads) == ["caller-0", "caller-1"]


def test_a_queue_delay_never_runs_in_the_caller(session, make_batcher):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate], max_queue_delay_us=1)
    first = batcher.submit(request(0), ())
    assert gate.entered.wait(WAIT)
    assert not first.cancel()  # started on the worker: it finishes
    gate.open()
    assert_same(first.result(WAIT), expected(session, request(0), ()))
    assert_same(batcher.submit(request(1), ()).result(WAIT), expected(session, request(1), ()))
    assert gate.threads == ["batcher-affine-0", "batcher-affine-0"]


def test_an_error_in_a_callers_run_reaches_that_caller_only(session, make_batcher, held):
    # At idle, in this thread: the error is on the future, and the instance is free again.
    idle = make_batcher([poison(session_runner(session))], name="idle")
    failed = idle.submit(request(99), ())
    assert failed.done() and isinstance(failed.exception(0), RuntimeError)
    assert_same(idle.submit(request(1), ()).result(0), expected(session, request(1), ()))
    # Held in the gate while others queue: they run on the worker, unharmed.
    inner = Gate(session_runner(session))
    batcher = make_batcher([poison(inner)])
    bad = held(inner, batcher, request(99))
    queued = [batcher.submit(request(rid), ()) for rid in (1, 2)]
    inner.open()
    with pytest.raises(RuntimeError, match="poisoned row"):
        bad.result(WAIT)
    for rid, future in zip((1, 2), queued, strict=True):
        assert_same(future.result(WAIT), expected(session, request(rid), ()))
    assert inner.batches == [[99], [1, 2]]
    assert inner.threads == ["held-0", "batcher-affine-0"]


# -- errors, deadlines, bounds, cancellation


def test_a_failed_run_fails_its_whole_batch_and_no_other(session, make_batcher, held):
    inner = Gate(session_runner(session))

    def poisoned(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        if (feed["b"] == 99).any():
            raise RuntimeError("poisoned row")
        return inner(feed, outputs)

    batcher = make_batcher([poisoned], max_batch_size=3)
    first = held(inner, batcher, request(0))
    good_before = batcher.submit(request(1), ())
    bad = batcher.submit(request(99), ())
    good_after = batcher.submit(request(2), ())  # shares the poisoned run
    next_run = batcher.submit(request(3), ())  # max_batch_size: the next run
    other_dim = batcher.submit(request(4, d=5), ())  # incompatible: its own run
    inner.open()
    for future in (good_before, bad, good_after):
        with pytest.raises(RuntimeError, match="poisoned row"):
            future.result(WAIT)
    for future, rid, d in [(first, 0, 3), (next_run, 3, 3), (other_dim, 4, 5)]:
        assert_same(future.result(WAIT), expected(session, request(rid, d=d), ()))


def test_a_run_that_loses_rows_fails_its_batch(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher(
        [lambda feed, outputs: {k: v[:1] for k, v in gate(feed, outputs).items()}]
    )
    first = held(gate, batcher, request(0))
    merged = [batcher.submit(request(rid), ()) for rid in (1, 2)]
    gate.open()
    assert_same(first.result(WAIT), expected(session, request(0), ()))
    for future in merged:
        with pytest.raises(TensorgateError, match="rows"):
            future.result(WAIT)


def test_a_request_past_its_deadline_is_dropped_before_compute(session, make_batcher, held):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder)
    first = held(gate, batcher, request(0))
    deadline = time.monotonic() + 0.05
    late = batcher.submit(request(1), (), deadline=deadline)
    patient = batcher.submit(request(2), (), deadline=time.monotonic() + 5 * WAIT)
    while time.monotonic() <= deadline:  # ends 50 ms later
        time.sleep(0.01)
    gate.open()
    with pytest.raises(DeadlineExceededError):
        late.result(WAIT)
    assert_same(patient.result(WAIT), expected(session, request(2), ()))
    first.result(WAIT)
    assert gate.batches == [[0], [2]]
    assert recorder.rejects == ["deadline"]


def test_a_request_already_past_its_deadline_fails_at_once(session, make_batcher):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate])
    future = batcher.submit(request(0), (), deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceededError):
        future.result(WAIT)
    assert gate.batches == []


def test_a_full_queue_refuses_at_once_and_others_go_on(session, make_batcher, held):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder, max_queue_size=2)
    first = held(gate, batcher, request(0))
    queued = [batcher.submit(request(rid), ()) for rid in (1, 2)]
    assert batcher.queue_depth == 2
    with pytest.raises(ResourceExhaustedError) as refused:
        batcher.submit(request(3), ())
    assert refused.value.reason == "queue_full"
    gate.open()
    for rid, future in enumerate([first, *queued]):
        assert_same(future.result(WAIT), expected(session, request(rid), ()))
    assert_same(batcher.submit(request(4), ()).result(WAIT), expected(session, request(4), ()))
    assert recorder.rejects == ["queue_full"]
    assert 3 not in [rid for run in gate.batches for rid in run]


def test_a_cancelled_request_leaves_the_queue_and_is_never_computed(session, make_batcher, held):
    gate = Gate(session_runner(session))
    recorder = Recorder()
    batcher = make_batcher([gate], recorder=recorder, max_queue_size=3)
    first = held(gate, batcher, request(0))
    before = batcher.submit(request(1), ())
    cancelled = batcher.submit(request(2), ())
    after = batcher.submit(request(3), ())
    assert cancelled.cancel()
    assert batcher.queue_depth == 2
    replacement = batcher.submit(request(4), ())  # the cancelled one no longer takes a place
    gate.open()
    for rid, future in [(0, first), (1, before), (3, after), (4, replacement)]:
        assert_same(future.result(WAIT), expected(session, request(rid), ()))
    assert cancelled.cancelled()
    assert gate.batches == [[0], [1, 3, 4]]
    assert recorder.rejects == ["cancelled"]
    assert batcher.queue_depth == 0


def test_many_cancellations_keep_the_queue_in_order(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate], max_batch_size=64, max_queue_size=200)
    first = held(gate, batcher, request(0))
    futures = {rid: batcher.submit(request(rid), ()) for rid in range(1, 151)}
    kept = [rid for rid in futures if rid % 15 == 0]
    for rid, future in futures.items():
        if rid not in kept:
            assert future.cancel()
    assert batcher.queue_depth == len(kept)
    gate.open()
    first.result(WAIT)
    for rid in kept:
        assert_same(futures[rid].result(WAIT), expected(session, request(rid), ()))
    assert gate.batches == [[0], kept]
    assert batcher.queue_depth == 0


# -- instances and closing


def test_each_instance_has_a_named_worker(model, make_batcher):
    runners = [session_runner(make_session(model)) for _ in range(2)]
    make_batcher(runners, name="two")
    names = {thread.name for thread in threading.enumerate()}
    assert {"batcher-two-0", "batcher-two-1"} <= names


def test_close_finishes_accepted_work_then_refuses(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate])
    accepted = [held(gate, batcher, request(0))]
    accepted += [batcher.submit(request(rid), ()) for rid in (1, 2)]
    closer = threading.Thread(target=batcher.close, args=(WAIT,), name="test-closer")
    closer.start()
    give_up = time.monotonic() + WAIT
    while time.monotonic() < give_up:  # until close() has begun: then submit refuses
        try:
            accepted.append(batcher.submit(request(len(accepted)), ()))
        except ModelUnavailableError:
            break
        time.sleep(0.001)
    else:
        pytest.fail("submit kept accepting after close()")
    gate.open()
    closer.join(WAIT)
    assert not closer.is_alive()
    for rid, future in enumerate(accepted):
        assert_same(future.result(0), expected(session, request(rid), ()))


def test_close_waits_for_a_run_in_a_callers_thread(session, make_batcher, held):
    gate = Gate(session_runner(session))
    closers: list[threading.Thread] = []
    closing_when_done: list[bool] = []

    def run(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        result = gate(feed, outputs)
        closing_when_done.extend(closer.is_alive() for closer in closers)
        return result

    batcher = make_batcher([run])
    first = held(gate, batcher, request(0))
    closer = threading.Thread(target=batcher.close, args=(WAIT,), name="test-closer")
    closers.append(closer)
    closer.start()
    accepted = []
    give_up = time.monotonic() + WAIT
    while time.monotonic() < give_up:  # until close() has begun: then submit refuses
        try:
            accepted.append(batcher.submit(request(1), ()))
        except ModelUnavailableError:
            break
        time.sleep(0.001)
    else:
        pytest.fail("submit kept accepting after close()")
    gate.open()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert closing_when_done and all(closing_when_done)  # close() returned after every run
    assert_same(first.result(WAIT), expected(session, request(0), ()))
    for future in accepted:
        assert_same(future.result(0), expected(session, request(1), ()))


def test_close_fails_what_is_still_queued_when_time_runs_out(session, make_batcher, held):
    gate = Gate(session_runner(session))
    batcher = make_batcher([gate])
    first = held(gate, batcher, request(0))
    queued = batcher.submit(request(1), ())
    batcher.close(0.05)  # the run of `first` is stuck in the gate
    with pytest.raises(ModelUnavailableError):
        queued.result(WAIT)
    gate.open()
    assert_same(first.result(WAIT), expected(session, request(0), ()))


# -- merge and split under concurrency

request_specs = st.lists(
    st.tuples(
        st.integers(1, 3),  # rows
        st.sampled_from([2, 3]),  # feature dim: requests of the other one are incompatible
        st.sampled_from([(), ("y",), ("s",)]),  # requested outputs
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    specs=request_specs,
    data=st.data(),
    threads=st.integers(1, 4),
    max_batch_size=st.integers(1, 6),
    delay_us=st.sampled_from([0, 300]),
    preferred=st.lists(st.integers(2, 4), max_size=2, unique=True),
    instances=st.integers(1, 2),
)
def test_every_caller_gets_what_an_unbatched_run_gives(
    model, session, specs, data, threads, max_batch_size, delay_us, preferred, instances
):
    order = data.draw(st.permutations(range(len(specs))), label="arrival order")
    sessions = [session] if instances == 1 else [session, make_session(model)]
    # The first runs wait in the gates while the rest queue behind them.
    opened = threading.Event()
    gates = [Gate(session_runner(s), opened=opened) for s in sessions]
    batcher = DynamicBatcher(
        "hypothesis",
        gates,
        max_batch_size=max_batch_size,
        config=DynamicBatchingConfig(max_queue_delay_us=delay_us, preferred_batch_sizes=preferred),
        batchable=True,
    )
    inputs = [request(rid, rows, d) for rid, (rows, d, _) in enumerate(specs)]
    futures: dict[int, Future[Feed]] = {}

    def submit_share(share: list[int]) -> None:
        for rid in share:
            futures[rid] = batcher.submit(inputs[rid], specs[rid][2])

    submitters = [
        threading.Thread(target=submit_share, args=(order[i::threads],), name=f"submitter-{i}")
        for i in range(threads)
    ]
    try:
        for thread in submitters:
            thread.start()
        # Open once every submitter is done or waits in a gate, running its request itself.
        give_up = time.monotonic() + WAIT
        while time.monotonic() < give_up:
            inside = set().union(*(gate.waiting for gate in gates))
            if all(not t.is_alive() or t.ident in inside for t in submitters):
                break
            time.sleep(0.001)
        opened.set()
        for thread in submitters:
            thread.join(WAIT)
        for rid, (_, _, outputs) in enumerate(specs):
            assert_same(futures[rid].result(WAIT), expected(session, inputs[rid], outputs))
    finally:
        opened.set()
        batcher.close(WAIT)
    runs = [run for gate in gates for run in gate.batches]
    assert sorted(rid for run in runs for rid in run) == sorted(
        rid for rid, (rows, _, _) in enumerate(specs) for _ in range(rows)
    )
    largest = max(rows for rows, _, _ in specs)
    assert all(len(run) <= max(max_batch_size, largest) for run in runs)
