"""Response cache benchmark: the targets of issue 4, against real `tensorgate serve` processes.

1. hit vs miss latency (p50) at concurrency 1: a hit's p50 at most 25% of a miss's;
2. all-hit vs all-miss throughput at concurrency 16: at least 3x;
3. all-miss throughput with the cache vs ``--no-cache``: at most 5% lower;
4. disk-hit latency with a 64 MB disk cache nearly empty vs holding 100k entries (memory tier off,
   so every hit is a disk hit): it should stay about the same.

Prints a table and writes ``benchmarks/results/cache_bench.json``::

    python benchmarks/cache_bench.py                 # full run, several minutes
    python benchmarks/cache_bench.py --quick         # smoke run, well under a minute

The load generator is Python threads in this process, one client channel each: on a small machine
it competes with the server for cores, which the ratios partly cancel out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorgate.client import Client, InferenceServerError
from tensorgate.tools.probes import free_port

log = logging.getLogger("cache_bench")
REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


@dataclass
class Server:
    target: str
    process: subprocess.Popen[bytes]


@contextmanager
def serve(
    args: argparse.Namespace, *flags: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A `tensorgate serve` of one model on a free port, until the block ends."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    environment.update(env or {})
    command = [
        sys.executable, "-m", "tensorgate.cli.main", "serve",
        "--model-repository", str(args.model_repository), "--models", args.model,
        "--port", str(port), "--metrics-port", "0", "--drain-seconds", "0", *flags,
    ]  # fmt: skip
    log_path = Path(tempfile.gettempdir()) / f"cache-bench-serve-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
        )
    server = Server(f"127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 120
        with Client(server.target, timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited early; see {log_path}")
                with suppress(InferenceServerError):
                    if client.model_ready(args.model):
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready in 120 s; see {log_path}")
                time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def cached_server(args: argparse.Namespace, cache_dir: Path, **env: str) -> Iterator[Server]:
    settings = {"TENSORGATE_CACHE_ENABLED": "true", **env}
    return serve(args, "--cache-dir", str(cache_dir), env=settings)


class Inputs:
    """Inputs of the model's shape: ``unique()`` never repeats (a miss), ``pool`` repeats (hits)."""

    def __init__(self, client: Client, model: str, pool: int) -> None:
        (spec,) = client.metadata(model).inputs
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        self.name = spec.name
        self._base = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        self._counter = iter(range(10**12))
        self._lock = threading.Lock()
        self.pool = [self._make(-(i + 1)) for i in range(pool)]

    def _make(self, index: int) -> dict[str, np.ndarray]:
        array = self._base.copy()
        array.flat[0] = float(index)  # exact in float32 up to 2**24 ...
        array.flat[1] = float(index // 2**24)  # ... and unique beyond
        return {self.name: array}

    def unique(self) -> dict[str, np.ndarray]:
        with self._lock:
            index = next(self._counter)
        return self._make(index)


def timed_requests(
    target: str, model: str, count: int, next_inputs: Callable[[int], dict[str, np.ndarray]]
) -> tuple[list[float], Counter[str]]:
    """``count`` sequential requests; latencies in ms and the ``cache`` parameters seen."""
    latencies, outcomes = [], Counter[str]()
    with Client(target, timeout=30) as client:
        for i in range(count):
            inputs = next_inputs(i)
            started = time.perf_counter()
            result = client.infer_result(model, inputs)
            latencies.append((time.perf_counter() - started) * 1e3)
            outcomes[str(result.parameters.get("cache", "none"))] += 1
    return latencies, outcomes


def throughput(
    target: str,
    model: str,
    concurrency: int,
    seconds: float,
    next_inputs: Callable[[int], dict[str, np.ndarray]],
) -> tuple[float, Counter[str]]:
    """Requests per second over ``seconds`` with ``concurrency`` closed-loop threads."""
    counts = [0] * concurrency
    outcomes: list[Counter[str]] = [Counter() for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with Client(target, timeout=30) as client:
                client.infer_result(model, next_inputs(index))  # connect before timing
                start.wait()
                while not stop.is_set():
                    result = client.infer_result(model, next_inputs(index))
                    counts[index] += 1
                    outcomes[index][str(result.parameters.get("cache", "none"))] += 1
        except BaseException as error:
            errors.append(error)
            start.abort()

    threads = [
        threading.Thread(target=work, args=(i,), name=f"load-{i}") for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    start.wait(60)
    began = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - began
    if errors:
        raise RuntimeError(f"load thread failed: {errors[0]!r}")
    return sum(counts) / elapsed, sum(outcomes, Counter())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_latency(args: argparse.Namespace, server: Server, inputs: Inputs) -> dict:
    target, model, n = server.target, args.model, args.requests
    timed_requests(target, model, 20, lambda i: inputs.unique())  # warm the path
    miss, miss_outcomes = timed_requests(target, model, n, lambda i: inputs.unique())
    hit_input = inputs.pool[0]
    timed_requests(target, model, 1, lambda i: hit_input)
    hit, hit_outcomes = timed_requests(target, model, n, lambda i: hit_input)
    result = {
        "miss_p50_ms": percentile(miss, 50),
        "miss_p99_ms": percentile(miss, 99),
        "hit_p50_ms": percentile(hit, 50),
        "hit_p99_ms": percentile(hit, 99),
        "miss_outcomes": dict(miss_outcomes),
        "hit_outcomes": dict(hit_outcomes),
    }
    result["hit_over_miss_p50"] = result["hit_p50_ms"] / result["miss_p50_ms"]
    return result


def bench_throughput(
    args: argparse.Namespace, cached: Server, uncached: Server, inputs: Inputs
) -> dict:
    model, c, seconds = args.model, args.concurrency, args.duration
    for item in inputs.pool:  # prime the hit pool
        timed_requests(cached.target, model, 1, lambda i, item=item: item)
    rounds: dict[str, list[float]] = {"all_hit": [], "all_miss": [], "all_miss_no_cache": []}
    outcomes: dict[str, Counter[str]] = {key: Counter() for key in rounds}
    pool = inputs.pool
    cursor = [0] * c

    def from_pool(index: int) -> dict[str, np.ndarray]:
        cursor[index] += 1
        return pool[(index * 7 + cursor[index]) % len(pool)]

    for _ in range(args.rounds):  # interleaved, so that drift of the machine hits each alike
        for name, server, source in (
            ("all_miss", cached, lambda i: inputs.unique()),
            ("all_miss_no_cache", uncached, lambda i: inputs.unique()),
            ("all_hit", cached, from_pool),
        ):
            rate, seen = throughput(server.target, model, c, seconds, source)
            rounds[name].append(rate)
            outcomes[name] += seen
            log.info("%s: %.0f req/s", name, rate)
    result: dict = {f"{k}_rps": statistics.median(v) for k, v in rounds.items()}
    result["rounds_rps"] = rounds
    result["outcomes"] = {k: dict(v) for k, v in outcomes.items()}
    result["hit_over_miss_throughput"] = result["all_hit_rps"] / result["all_miss_rps"]
    result["no_hit_cost"] = 1 - result["all_miss_rps"] / result["all_miss_no_cache_rps"]
    return result


def prefill(cache_dir: Path, entries: int, size_limit: int) -> dict:
    """``entries`` entries of a cnn answer's size under random keys, straight into the disk tier."""
    import diskcache

    from tensorgate.server.cache import encode_outputs

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 10)).astype(np.float32)
    with diskcache.Cache(
        str(cache_dir), size_limit=size_limit, eviction_policy="least-recently-used", cull_limit=0
    ) as cache:
        for start in range(0, entries, 1000):
            with cache.transact():
                for _ in range(min(1000, entries - start)):
                    key = rng.bytes(32)
                    cache.set(key, encode_outputs(key, {"logits": logits}))
        evicted = cache.cull()
        return {"entries": len(cache), "volume_bytes": cache.volume(), "evicted": evicted}


def bench_scale(args: argparse.Namespace, inputs_pool: int) -> dict:
    """Disk-hit p50 with the disk tier nearly empty, then holding ``--entries`` entries."""
    limit = 64 * MIB
    env = {"TENSORGATE_CACHE_MEMORY_BYTES": "0", "TENSORGATE_CACHE_DISK_BYTES": str(limit)}
    directory = Path(tempfile.mkdtemp(prefix="cache-bench-scale-"))
    try:
        result: dict = {}
        for phase in ("nearly_empty", "full"):
            if phase == "full":
                result["prefill"] = prefill(directory, args.entries, limit)
            with cached_server(args, directory, **env) as server:
                with Client(server.target, timeout=10) as client:
                    inputs = Inputs(client, args.model, inputs_pool)
                for item in inputs.pool:  # these land on disk (memory tier is off)
                    timed_requests(server.target, args.model, 1, lambda i, item=item: item)
                time.sleep(1.0)  # the background writer lands them
                hit, outcomes = timed_requests(
                    server.target, args.model, args.requests,
                    lambda i, pool=inputs.pool: pool[i % len(pool)],
                )  # fmt: skip
                result[f"{phase}_disk_hit_p50_ms"] = percentile(hit, 50)
                result[f"{phase}_disk_hit_p99_ms"] = percentile(hit, 99)
                result[f"{phase}_outcomes"] = dict(outcomes)
        result["full_over_empty_p50"] = (
            result["full_disk_hit_p50_ms"] / result["nearly_empty_disk_hit_p50_ms"]
        )
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "examples" / "models")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--requests", type=int, default=1000, help="per latency series")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per workload")
    parser.add_argument(
        "--entries", type=int, default=100_000, help="disk entries for the scale test"
    )
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cache_bench.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.duration, args.rounds, args.entries = 100, 2.0, 1, 5_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    results: dict = {
        "model": args.model,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    with (
        tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp,
        cached_server(args, Path(tmp) / "cache") as cached,
        serve(args, "--no-cache") as uncached,
    ):
        with Client(cached.target, timeout=10) as client:
            inputs = Inputs(client, args.model, pool=64)
        log.info("latency at concurrency 1")
        results["latency_c1"] = bench_latency(args, cached, inputs)
        log.info("throughput at concurrency %d", args.concurrency)
        results["throughput"] = bench_throughput(args, cached, uncached, inputs)
    if not args.skip_scale:
        log.info("disk tier at %d entries", args.entries)
        results["scale"] = bench_scale(args, inputs_pool=200)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten: {args.output}")
    return 0


def print_table(results: dict) -> None:
    lat, thr = results["latency_c1"], results["throughput"]
    rows = [
        ("hit p50 / miss p50, c=1", f"{lat['hit_p50_ms']:.3f} / {lat['miss_p50_ms']:.3f} ms",
         f"{lat['hit_over_miss_p50']:.0%}", "<= 25%"),
        ("all-hit / all-miss throughput, c=16", f"{thr['all_hit_rps']:.0f} / {thr['all_miss_rps']:.0f} req/s",
         f"{thr['hit_over_miss_throughput']:.2f}x", ">= 3x"),
        ("all-miss: cache / --no-cache", f"{thr['all_miss_rps']:.0f} / {thr['all_miss_no_cache_rps']:.0f} req/s",
         f"{thr['no_hit_cost']:+.1%} cost", "<= 5%"),
    ]  # fmt: skip
    if "scale" in results:
        scale = results["scale"]
        rows.append(
            (f"disk hit p50: {scale['prefill']['entries']} entries / nearly empty",
             f"{scale['full_disk_hit_p50_ms']:.3f} / {scale['nearly_empty_disk_hit_p50_ms']:.3f} ms",
             f"{scale['full_over_empty_p50']:.2f}x", "about 1x"),
        )  # fmt: skip
    print("\n| measure | values | result | target |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
