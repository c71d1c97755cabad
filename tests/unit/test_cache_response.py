"""ResponseCache in one process: hits, the memory bound, TTL, single flight, errors never cached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from tensorgate.server.cache import CacheStats, Outcome, ResponseCache
from tensorgate.server.cache.memory import MemoryLRU
from tensorgate.server.errors import (
    DeadlineExceededError,
    InvalidInputError,
    RequestCancelledError,
)

WAIT_S = 10.0  # bound of every wait in these tests


def key_of(seed: int) -> bytes:
    return ResponseCache.key(
        model="m", model_digest="d", inputs={"x": np.full(4, seed, dtype=np.float32)}
    )


class Model:
    """A stand-in for a model run that counts its runs; the result depends on the seed."""

    def __init__(self, size: int = 4) -> None:
        self.runs = 0
        self.size = size
        self._lock = threading.Lock()

    def compute(self, seed: int) -> Callable[[], dict[str, np.ndarray]]:
        def run() -> dict[str, np.ndarray]:
            with self._lock:
                self.runs += 1
            return {"y": np.full(self.size, seed, dtype=np.float32)}

        return run


@pytest.fixture
def stats() -> CacheStats:
    return CacheStats()


@pytest.fixture
def cache(stats: CacheStats):
    with ResponseCache(None, memory_bytes=1 << 20, disk_bytes=0, observer=stats) as cache:
        yield cache


def test_second_identical_request_is_a_memory_hit_without_a_run(cache, stats) -> None:
    model = Model()
    first, outcome1 = cache.get_or_compute("m", key_of(1), model.compute(1))
    second, outcome2 = cache.get_or_compute("m", key_of(1), model.compute(1))
    assert (outcome1, outcome2) == (Outcome.MISS, Outcome.MEMORY_HIT)
    assert (outcome1.parameter, outcome2.parameter) == ("miss", "hit")
    assert model.runs == 1
    np.testing.assert_array_equal(second["y"], first["y"])
    assert not second["y"].flags.writeable  # shared answers cannot be changed by a caller
    assert stats.hits == {("m", "memory"): 1}
    assert stats.misses == {"m": 1}
    assert stats.lookups == 2


def test_different_keys_get_their_own_answers(cache) -> None:
    model = Model()
    for seed in (1, 2, 1, 2):
        outputs, _ = cache.get_or_compute("m", key_of(seed), model.compute(seed))
        assert outputs["y"][0] == seed
    assert model.runs == 2


def test_memory_tier_stays_within_its_byte_bound_and_evicts_least_recently_used(stats) -> None:
    model = Model(size=1000)  # ~4 KB per entry
    with ResponseCache(None, memory_bytes=20_000, disk_bytes=0, observer=stats) as cache:
        cache.get_or_compute("m", key_of(0), model.compute(0))
        for seed in range(1, 10):
            cache.get_or_compute("m", key_of(seed), model.compute(seed))
            cache.get_or_compute("m", key_of(0), model.compute(0))  # keeps 0 recently used
            assert cache.memory_bytes <= 20_000
        assert model.runs == 10
        assert stats.evictions["memory"] >= 5
        assert cache.get_or_compute("m", key_of(0), model.compute(0))[1] is Outcome.MEMORY_HIT
        assert cache.get_or_compute("m", key_of(1), model.compute(1))[1] is Outcome.MISS
        assert cache.get_or_compute("m", key_of(9), model.compute(9))[1] is Outcome.MEMORY_HIT


def test_an_answer_larger_than_the_memory_bound_is_answered_but_not_kept() -> None:
    model = Model(size=10_000)
    with ResponseCache(None, memory_bytes=1_000, disk_bytes=0) as cache:
        for _ in range(2):
            outputs, outcome = cache.get_or_compute("m", key_of(1), model.compute(1))
            assert outcome is Outcome.MISS and outputs["y"].shape == (10_000,)
        assert cache.memory_bytes == 0


def test_memory_entries_expire_after_their_ttl() -> None:
    now = [1000.0]
    lru = MemoryLRU(1000, clock=lambda: now[0])
    outputs = {"y": np.zeros(1)}
    lru.put(b"k", outputs, 10, ttl_s=5)
    lru.put(b"forever", outputs, 10)
    now[0] += 4.9
    assert lru.get(b"k") is outputs
    now[0] += 0.2
    assert lru.get(b"k") is None
    assert lru.bytes == 10 and len(lru) == 1
    now[0] += 1e9
    assert lru.get(b"forever") is outputs


class Gate:
    """A compute that blocks until released, so that others can pile up behind it."""

    def __init__(self, result: Callable[[], dict[str, np.ndarray]]) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.runs = 0
        self._result = result

    def __call__(self) -> dict[str, np.ndarray]:
        self.runs += 1
        self.entered.set()
        assert self.release.wait(WAIT_S)
        return self._result()


def run_in_threads(count: int, target: Callable[[], object]) -> tuple[list, list[threading.Thread]]:
    results: list = []

    def work() -> None:
        try:
            results.append(target())
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=work, name=f"request-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_concurrent_identical_misses_run_the_model_once(cache, stats) -> None:
    gate = Gate(Model().compute(7))
    results, threads = run_in_threads(
        16, lambda: cache.get_or_compute("m", key_of(7), gate, deadline=time.monotonic() + WAIT_S)
    )
    assert gate.entered.wait(WAIT_S)
    time.sleep(0.2)  # lets the others reach the flight; any of them that is late hits memory
    gate.release.set()
    join_all(threads)
    assert gate.runs == 1
    outcomes = [outcome for _, outcome in results]
    assert outcomes.count(Outcome.MISS) == 1
    assert set(outcomes) <= {Outcome.MISS, Outcome.SHARED_HIT, Outcome.MEMORY_HIT}
    for outputs, _ in results:
        np.testing.assert_array_equal(outputs["y"], np.full(4, 7, dtype=np.float32))
    assert sum(stats.hits.values()) == 15


def test_a_waiter_gives_up_at_its_own_deadline_without_running_the_model(cache) -> None:
    gate = Gate(Model().compute(3))
    results, threads = run_in_threads(1, lambda: cache.get_or_compute("m", key_of(3), gate))
    assert gate.entered.wait(WAIT_S)
    with pytest.raises(DeadlineExceededError):
        cache.get_or_compute("m", key_of(3), gate, deadline=time.monotonic() + 0.1)
    gate.release.set()
    join_all(threads)
    assert gate.runs == 1
    assert results[0][1] is Outcome.MISS


def test_waiters_share_the_leaders_error_and_errors_are_not_cached(cache) -> None:
    entered, release = threading.Event(), threading.Event()

    def failing() -> dict[str, np.ndarray]:
        entered.set()
        assert release.wait(WAIT_S)
        raise InvalidInputError("input 'x': bad")

    results, threads = run_in_threads(4, lambda: cache.get_or_compute("m", key_of(5), failing))
    assert entered.wait(WAIT_S)
    time.sleep(0.1)
    release.set()
    join_all(threads)
    assert len(results) == 4
    assert all(isinstance(result, InvalidInputError) for result in results)
    model = Model()
    outputs, outcome = cache.get_or_compute("m", key_of(5), model.compute(5))
    assert outcome is Outcome.MISS and model.runs == 1 and outputs["y"][0] == 5


@pytest.mark.parametrize(
    "leaders_own_error",
    [
        DeadlineExceededError("the leader's deadline passed in the queue"),
        RequestCancelledError("the leader's caller went away"),
    ],
    ids=["deadline", "cancelled"],
)
def test_when_the_leaders_own_request_fails_a_waiter_runs_the_model_itself(
    cache, leaders_own_error
) -> None:
    calls = 0
    first_entered, release = threading.Event(), threading.Event()

    def compute() -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_entered.set()
            assert release.wait(WAIT_S)
            raise leaders_own_error
        return {"y": np.ones(2, dtype=np.float32)}

    leader, leader_threads = run_in_threads(
        1, lambda: cache.get_or_compute("m", key_of(9), compute)
    )
    assert first_entered.wait(WAIT_S)
    waiter, waiter_threads = run_in_threads(
        1,
        lambda: cache.get_or_compute("m", key_of(9), compute, deadline=time.monotonic() + WAIT_S),
    )
    time.sleep(0.1)
    release.set()
    join_all(leader_threads + waiter_threads)
    assert leader[0] is leaders_own_error
    outputs, outcome = waiter[0]
    assert outcome is Outcome.MISS and calls == 2
    np.testing.assert_array_equal(outputs["y"], np.ones(2, dtype=np.float32))


def test_outputs_the_protocol_cannot_encode_are_answered_uncached(cache) -> None:
    runs = 0

    def compute() -> dict[str, np.ndarray]:
        nonlocal runs
        runs += 1
        return {"z": np.zeros(2, dtype=np.complex64)}

    for _ in range(2):
        outputs, outcome = cache.get_or_compute("m", key_of(4), compute)
        assert outcome is Outcome.MISS and outputs["z"].dtype == np.complex64
    assert runs == 2


def test_from_settings_honours_no_cache(tmp_path) -> None:
    from tensorgate.server.settings import Settings

    assert ResponseCache.from_settings(Settings(cache_enabled=False, cache_dir=tmp_path)) is None
    cache = ResponseCache.from_settings(Settings(cache_dir=tmp_path / "c"))
    assert cache is not None
    try:
        assert cache.disk_enabled
    finally:
        cache.close()
