"""Soak: `tensorgate up` for a long while at about 70% of its measured capacity, with a worker killed
every minute. Reports failed requests (0 expected), the RSS of every process per minute (flat after
warmup: at most 10% growth from the second to the last minute) and p99 per minute.

1. Capacity: closed-loop callers on the mix for ``--calibrate-seconds``; completed calls per second.
2. Soak: an open-loop dispatcher at ``--load-share`` of that rate, for ``--minutes``. The mix:
   digits, mlp and cnn; half the calls repeat one of a few inputs per model (cache hits), half carry
   fresh random inputs (misses); one ModelStreamInfer stream runs beside them the whole time.
3. Every ``--kill-every-seconds`` a worker gets SIGKILL (round robin); the supervisor restarts it.

Unary callers do not retry: every failure counted is one a caller would see. A stream is pinned to
one worker: when that worker is killed, what was in flight on the stream is lost and the stream is
opened again; that is reported apart (stream interruptions), since no balancer can move a stream.
Prints a table and writes JSON::

    python benchmarks/soak.py                          # 10 minutes, on a quiet machine
    python benchmarks/soak.py --minutes 2 --kill-every-seconds 30 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorgate.balancer.ports import PortLayout, busy_ports
from tensorgate.client import Client, InferenceServerError, RetryPolicy
from tensorgate.tools.probes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"
#: model -> (input name, one row's shape, share of the calls)
MIX = {
    "digits": ("pixels", (64,), 0.6),
    "mlp": ("x", (256,), 0.3),
    "cnn": ("image", (3, 32, 32), 0.1),
}
REPEATED_INPUTS = 16
NO_RETRY = RetryPolicy(max_attempts=1)
START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0
STREAM_INTERVAL_S = 0.05


# -- the stack


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    layout: PortLayout
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.layout.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The latest pid of each child, and the supervisor's."""
        found = re.findall(r"(worker \d+|envoy) started: pid (\d+)", self.log())
        return {"supervisor": self.process.pid, **{name: int(pid) for name, pid in found}}


def free_block(count: int) -> int:
    rng = np.random.default_rng()
    for _ in range(100):
        first = int(rng.integers(20_000, 45_000))
        if not busy_ports(list(range(first, first + count))):
            return first
    raise RuntimeError(f"no block of {count} free ports")


@contextmanager
def tensorgate_up(workers: int, scratch: Path) -> Iterator[Stack]:
    layout = PortLayout(free_block(workers + 1), free_port(), 0, workers)
    command = [
        sys.executable, "-m", "tensorgate.cli.main", "up",
        "--port", str(layout.port), "--admin-port", str(layout.admin_port),
        "--metrics-port", "0", "--workers", str(workers),
        "--model-repository", str(EXAMPLE_MODELS), "--cache-dir", str(scratch / "cache"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORGATE_")}
    log_path = scratch / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    stack = Stack(process, layout, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "tensorgate is up" not in stack.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tensorgate up did not start:\n{stack.log()[-3000:]}")
            time.sleep(0.2)
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# -- the load


class Mix:
    """Picks a model and inputs: half repeated (hits), half fresh (misses)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._repeated = {
            model: [self._rng.random((1, *shape), dtype=np.float32) for _ in range(REPEATED_INPUTS)]
            for model, (_name, shape, _share) in MIX.items()
        }

    def next(self) -> tuple[str, dict[str, np.ndarray]]:
        with self._lock:
            model = str(self._rng.choice(list(MIX), p=[share for *_, share in MIX.values()]))
            name, shape, _share = MIX[model]
            if self._rng.random() < 0.5:
                array = self._repeated[model][int(self._rng.integers(REPEATED_INPUTS))]
            else:
                array = self._rng.random((1, *shape), dtype=np.float32)
        return model, {name: array}


@dataclass
class Minute:
    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Recorder:
    def __init__(self, started: float) -> None:
        self.started = started
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self._lock = threading.Lock()

    def record(self, began: float, error: str | None) -> None:
        now = time.monotonic()
        with self._lock:  # by the minute the call began in
            minute = self.minutes[int((began - self.started) // 60)]
            if error is None:
                minute.ok += 1
                minute.latencies_ms.append((now - began) * 1e3)
            else:
                minute.failed += 1
                minute.errors[error] += 1


def call(client: Client, mix: Mix) -> str | None:
    model, inputs = mix.next()
    try:
        client.infer(model, inputs)
    except InferenceServerError as error:
        return f"{error.code.name}: {error.message[:120]}"
    return None


def capacity(target: str, seconds: float, callers: int) -> float:
    """Calls per second the stack completes with ``callers`` closed-loop callers on the mix."""
    client, mix, done = Client(target, timeout=CALL_TIMEOUT_S, retry=NO_RETRY), Mix(1), [0]
    lock, stop = threading.Lock(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if call(client, mix) is None:
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=loop, name=f"calibrate-{i}") for i in range(callers)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # warm the cache and the connections
    with lock:
        first, began = done[0], time.monotonic()
    time.sleep(seconds)
    with lock:
        rate = (done[0] - first) / (time.monotonic() - began)
    stop.set()
    for thread in threads:
        thread.join(CALL_TIMEOUT_S)
    client.close()
    return rate


@dataclass
class StreamStats:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    interruptions: int = 0
    lost: int = 0


def stream_loop(target: str, stop: threading.Event, stats: StreamStats) -> None:
    """One stream of digits calls at a steady pace; opened again when its worker dies."""
    rng = np.random.default_rng(3)
    with Client(target, timeout=None, retry=NO_RETRY) as client:
        while not stop.is_set():
            sent_here, answered_here = [0], 0

            def requests(sent: list[int] = sent_here) -> Iterator[dict[str, np.ndarray]]:
                while not stop.wait(STREAM_INTERVAL_S):
                    sent[0] += 1
                    yield {"pixels": rng.random((1, 64), dtype=np.float32)}

            try:
                for result in client.stream_infer("digits", requests(), timeout=None):
                    answered_here += 1
                    stats.errors += result.error is not None
            except InferenceServerError:
                if not stop.is_set():
                    stats.interruptions += 1
                    stats.lost += sent_here[0] - answered_here
            stats.sent += sent_here[0]
            stats.answered += answered_here


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


# -- the run


def soak(args: argparse.Namespace) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="tensorgate-soak-") as scratch,
        tensorgate_up(args.workers, Path(scratch)) as stack,
    ):
        measured = capacity(stack.target, args.calibrate_seconds, args.callers)
        rate = measured * args.load_share
        print(f"capacity {measured:.0f} calls/s; soaking at {rate:.0f} calls/s", flush=True)
        started = time.monotonic()
        end = started + args.minutes * 60
        recorder = Recorder(started)
        stop = threading.Event()
        stream_stats = StreamStats()
        stream = threading.Thread(
            target=stream_loop, args=(stack.target, stop, stream_stats), name="soak-stream"
        )
        stream.start()
        rss: dict[int, dict[str, float]] = defaultdict(dict)
        pids_by_minute: dict[int, dict[str, int]] = {}
        kills: list[dict[str, object]] = []
        skipped = 0
        client, mix = Client(stack.target, timeout=CALL_TIMEOUT_S, retry=NO_RETRY), Mix(2)
        in_flight = threading.BoundedSemaphore(args.callers * 4)

        def one() -> None:
            began = time.monotonic()
            try:
                recorder.record(began, call(client, mix))
            finally:
                in_flight.release()

        next_kill = started + args.kill_every_seconds
        next_sample = started
        victim = 0
        with ThreadPoolExecutor(args.callers * 4, thread_name_prefix="soak-call") as pool:
            due = started
            while (now := time.monotonic()) < end:
                if now >= next_sample:
                    minute = int((now - started) // 60)
                    pids = stack.pids()
                    pids_by_minute[minute] = pids
                    for name, pid in pids.items():
                        value = rss_mb(pid)
                        if value is not None:  # the last sample of the minute wins
                            rss[minute][name] = value
                    next_sample = now + args.sample_seconds
                if now >= next_kill:
                    name = f"worker {victim % args.workers}"
                    pid = stack.pids()[name]
                    os.kill(pid, signal.SIGKILL)
                    kills.append({"at_s": round(now - started, 1), "worker": name, "pid": pid})
                    victim += 1
                    next_kill += args.kill_every_seconds
                if now >= due:
                    if in_flight.acquire(blocking=False):
                        pool.submit(one)
                    else:
                        skipped += 1  # the client itself is saturated: not the server's failure
                    due += 1.0 / rate
                else:
                    time.sleep(min(due - now, 0.01))
            stop.set()
        stream.join(CALL_TIMEOUT_S)
        client.close()
        restarts = len(re.findall(r"exited unexpectedly", stack.log()))
    return report(args, measured, rate, recorder, rss, pids_by_minute, kills, stream_stats,
                  skipped, restarts)  # fmt: skip


def report(
    args: argparse.Namespace,
    measured: float,
    rate: float,
    recorder: Recorder,
    rss: dict[int, dict[str, float]],
    pids_by_minute: dict[int, dict[str, int]],
    kills: list[dict[str, object]],
    stream: StreamStats,
    skipped: int,
    restarts: int,
) -> dict[str, object]:
    minutes = []
    for index in sorted(recorder.minutes):
        minute = recorder.minutes[index]
        p99 = float(np.percentile(minute.latencies_ms, 99)) if minute.latencies_ms else None
        minutes.append({
            "minute": index + 1, "ok": minute.ok, "failed": minute.failed,
            "p99_ms": None if p99 is None else round(p99, 2),
            "rss_mb": {k: round(v, 1) for k, v in sorted(rss.get(index, {}).items())},
            "errors": dict(minute.errors),
        })  # fmt: skip
    # by process slot: a worker killed and restarted in between is compared with its predecessor
    # (what the host pays for that slot); `restarted` names the slots whose process changed
    growth: dict[str, float | None] = {}
    restarted: list[str] = []
    last = max(rss) if rss else 0
    if last >= 1:
        for name, second in rss.get(1, {}).items():
            final = rss[last].get(name)
            growth[name] = round(final / second - 1, 3) if final else None
            if pids_by_minute.get(1, {}).get(name) != pids_by_minute.get(last, {}).get(name):
                restarted.append(name)
    failed = sum(m["failed"] for m in minutes)  # type: ignore[misc]
    return {
        "benchmark": "soak",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "capacity_per_s": round(measured, 1),
        "rate_per_s": round(rate, 1),
        "failed_requests": failed,
        "calls": sum(m["ok"] for m in minutes) + failed,  # type: ignore[misc]
        "skipped_by_the_client": skipped,
        "kills": kills,
        "restarts_seen": restarts,
        "stream": vars(stream),
        "rss_growth_second_to_last_minute": growth,
        "rss_slots_restarted_in_between": sorted(restarted),
        "rss_flat": all(g is None or g <= 0.10 for g in growth.values()),
        "minutes": minutes,
    }


def print_table(result: dict[str, object]) -> None:
    minutes = result["minutes"]
    assert isinstance(minutes, list)
    names = sorted({name for m in minutes for name in m["rss_mb"]})
    header = f"{'MIN':>3} {'OK':>7} {'FAILED':>6} {'P99 MS':>7} " + " ".join(
        f"{n.upper() + ' MB':>12}" for n in names
    )
    print(header)
    for m in minutes:
        p99 = "-" if m["p99_ms"] is None else f"{m['p99_ms']:.1f}"
        cells = " ".join(f"{m['rss_mb'].get(n, float('nan')):>12.1f}" for n in names)
        print(f"{m['minute']:>3} {m['ok']:>7} {m['failed']:>6} {p99:>7} {cells}")
    stream = result["stream"]
    print(
        f"capacity {result['capacity_per_s']}/s, soak at {result['rate_per_s']}/s; "
        f"failed requests: {result['failed_requests']} of {result['calls']}; "
        f"kills {len(result['kills'])}, restarts {result['restarts_seen']}; "  # type: ignore[arg-type]
        f"calls the client could not start in time: {result['skipped_by_the_client']}; "
        f"stream: {stream}; RSS growth (minute 2 -> last): "  # type: ignore[index]
        f"{result['rss_growth_second_to_last_minute']} flat={result['rss_flat']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--callers", type=int, default=16, help="closed-loop callers to calibrate")
    parser.add_argument("--calibrate-seconds", type=float, default=15.0)
    parser.add_argument("--load-share", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--kill-every-seconds", type=float, default=60.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument(
        "--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "soak.json"
    )
    args = parser.parse_args()
    result = soak(args)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if result["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
