"""Two worker processes, each with its own ResponseCache on one directory, share their answers.

Each worker is a separate Python interpreter (subprocess, the same isolation as a spawned
multiprocessing worker) driven line by line over stdin/stdout, so both stay open at once.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorgate.server.cache.disk import FILTER_FRESH_S

WAIT_S = 60.0

WORKER = r"""
import json, sys
import numpy as np
from tensorgate.server.cache import ResponseCache

cache = ResponseCache(sys.argv[1], memory_bytes=1 << 20, disk_bytes=1 << 24)
runs = 0

def run(seed):
    def compute():
        global runs
        runs += 1
        return {"y": np.full(3, seed, dtype=np.float32)}
    return compute

print(json.dumps({"ready": cache.disk_enabled}), flush=True)
for line in sys.stdin:
    seed = int(line)
    key = ResponseCache.key(model="m", model_digest="d", inputs={"x": np.full(2, seed, np.int32)})
    outputs, outcome = cache.get_or_compute("m", key, run(seed))
    landed = cache.flush(10.0)
    print(json.dumps({"outcome": outcome.value, "runs": runs, "y": outputs["y"].tolist(),
                      "landed": landed}), flush=True)
cache.close()
"""


class Worker:
    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read() == {"ready": True}

    def ask(self, seed: int) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{seed}\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(WAIT_S):
                raise AssertionError(f"worker {self.process.pid} did not answer in {WAIT_S} s")
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        try:
            self.process.communicate(timeout=WAIT_S)  # closes stdin: the worker closes its cache
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def workers(tmp_path) -> Iterator[tuple[Worker, Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(2):
            started.append(Worker(tmp_path / "shared"))
        yield started[0], started[1]
    finally:
        for worker in started:
            worker.stop()
    assert [worker.process.returncode for worker in started] == [0, 0]


def test_two_worker_processes_share_hits_through_the_disk_tier(workers) -> None:
    a, b = workers
    first = a.ask(1)
    assert (first["outcome"], first["runs"], first["landed"]) == ("miss", 1, True)
    time.sleep(FILTER_FRESH_S)  # another process's landed write is seen this long after, at most
    assert b.ask(1) == {"outcome": "disk", "runs": 0, "y": [1.0] * 3, "landed": True}
    assert b.ask(2)["outcome"] == "miss"
    time.sleep(FILTER_FRESH_S)
    assert a.ask(2) == {"outcome": "disk", "runs": 1, "y": [2.0] * 3, "landed": True}
    assert a.ask(1)["outcome"] == "memory"
