"""What the Envoy hop costs, measured against direct calls in the same run (issue 5 targets).

1. Latency: p50 at concurrency 1 through Envoy minus p50 direct, on the same worker; the target is
   at most 0.35 ms added.
2. Throughput: at concurrency 64 with 2 workers, through Envoy against the sum measured direct
   (32 callers on each worker at once); the target is at least 80%.

Direct and Envoy runs alternate in rounds, so drift of the machine hits both alike. Workers serve
``digits`` with the cache off; every request carries fresh random inputs. Prints a table and writes
``benchmarks/results/envoy_overhead.json``::

    python benchmarks/envoy_overhead.py              # full run, a few minutes, on a quiet machine
    python benchmarks/envoy_overhead.py --quick      # smoke run, well under a minute

The load generator (``tensorgate.tools.bench``) runs in separate processes on the same host, so on
a small machine it, Envoy and the workers share the cores; the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tensorgate.balancer.admin import AdminUnavailable, EnvoyAdmin
from tensorgate.balancer.envoy import envoy_command
from tensorgate.balancer.envoy_config import write_bootstrap
from tensorgate.balancer.processes import Child
from tensorgate.balancer.settings import BalancerSettings, Endpoint
from tensorgate.client import Client
from tensorgate.server.tensors import TensorSpec
from tensorgate.tools.bench.load import GeneratorPool, LoadResult, LoadSpec
from tensorgate.tools.bench.payload import PayloadSpec
from tensorgate.tools.bench.servers import running, serve_command
from tensorgate.tools.bench.summary import run_record
from tensorgate.tools.probes import free_port

log = logging.getLogger("envoy_overhead")
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "envoy_overhead.json"
MODEL = "digits"
MAX_ADDED_P50_MS = 0.35
MIN_THROUGHPUT_SHARE = 0.80
ENVOY_READY_TIMEOUT_S = 30.0


@contextmanager
def envoy_in_front_of(ports: Sequence[int], workdir: Path, threads: int | None) -> Iterator[str]:
    """Envoy (the project's bootstrap) routing to ``ports``; yields its front door once it routes
    to every one of them."""
    settings = BalancerSettings(
        endpoints=[Endpoint(port=p) for p in ports],
        port=free_port(),
        admin_port=free_port(),
        concurrency=threads,
    )
    config = write_bootstrap(settings, workdir / f"envoy-{settings.port}.json")
    child = Child("envoy", envoy_command(config))
    child.start()
    admin = EnvoyAdmin(settings.admin_port)
    try:
        deadline = time.monotonic() + ENVOY_READY_TIMEOUT_S
        while True:
            try:
                if admin.healthy_ports() >= set(ports):
                    break
            except AdminUnavailable:
                pass
            if time.monotonic() > deadline or not child.running:
                raise RuntimeError(f"Envoy did not route to {list(ports)} in time")
            time.sleep(0.1)
        yield f"127.0.0.1:{settings.port}"
    finally:
        child.stop(signal.SIGTERM, 10)


def payload(target: str) -> PayloadSpec:
    with Client(target, timeout=10.0) as client:
        model = client.metadata(MODEL)
    return PayloadSpec(MODEL, tuple(TensorSpec(t.name, t.datatype, t.shape) for t in model.inputs))


def alternate(
    pool: GeneratorPool, specs: dict[str, LoadSpec], rounds: int
) -> dict[str, list[LoadResult]]:
    """Each spec once per round, in the same order every round."""
    results: dict[str, list[LoadResult]] = {label: [] for label in specs}
    for round_index in range(rounds):
        for label, spec in specs.items():
            log.info("round %d/%d: %s", round_index + 1, rounds, label)
            results[label].append(pool.run(spec))
    return results


def summarize(label: str, spec: LoadSpec, parts: list[LoadResult]) -> dict[str, Any]:
    merged = LoadResult.merge(parts)
    record = run_record(label, spec, merged, None, None)
    record["duration_s"] = spec.duration_s * len(parts)
    record["throughput_rps"] = record["requests"] / record["duration_s"]
    record["rounds"] = len(parts)
    record["throughput_rps_by_round"] = [p.latencies.size / spec.duration_s for p in parts]
    return record


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        for index, port in enumerate(ports):
            command = serve_command(args.model_repository, MODEL, port, ["--no-cache"])
            stack.enter_context(running(command, port, workdir / f"worker-{index}.log"))
        direct = [f"127.0.0.1:{p}" for p in ports]
        one = stack.enter_context(envoy_in_front_of(ports[:1], workdir, args.envoy_threads))
        two = stack.enter_context(envoy_in_front_of(ports, workdir, args.envoy_threads))
        common = {
            "payload": payload(direct[0]),
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "timeout_s": 30.0,
        }
        pool = stack.enter_context(GeneratorPool(args.generators))
        latency_specs = {
            "direct c=1": LoadSpec(targets=(direct[0],), concurrency=1, channels=1, **common),
            "envoy c=1": LoadSpec(targets=(one,), concurrency=1, channels=1, **common),
        }
        # one channel (HTTP/2 connection) per worker direct; as many to Envoy, which spreads
        # its connections over its threads
        throughput_specs = {
            "direct 2 workers c=64": LoadSpec(
                targets=tuple(direct), concurrency=64, channels=2, **common
            ),
            "envoy 2 workers c=64": LoadSpec(targets=(two,), concurrency=64, channels=2, **common),
        }
        latency = alternate(pool, latency_specs, args.rounds)
        throughput = alternate(pool, throughput_specs, args.rounds)
    runs = [summarize(label, latency_specs[label], parts) for label, parts in latency.items()]
    runs += [
        summarize(label, throughput_specs[label], parts) for label, parts in throughput.items()
    ]
    by_label = {run["target"]: run for run in runs}

    added_p50 = (
        by_label["envoy c=1"]["latency_ms"]["p50"] - by_label["direct c=1"]["latency_ms"]["p50"]
    )
    per_round_added = [
        float(np.median(e.latencies) - np.median(d.latencies)) * 1e3
        for d, e in zip(latency["direct c=1"], latency["envoy c=1"], strict=True)
    ]
    share = (
        by_label["envoy 2 workers c=64"]["throughput_rps"]
        / by_label["direct 2 workers c=64"]["throughput_rps"]
    )
    return {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "generators": args.generators,
            "envoy_threads": args.envoy_threads,
        },
        "runs": runs,
        "targets": {
            "envoy_added_p50_ms_c1": {
                "measured": added_p50,
                "per_round": per_round_added,
                "threshold": f"<= {MAX_ADDED_P50_MS}",
                "ok": added_p50 <= MAX_ADDED_P50_MS,
            },
            "envoy_throughput_share_c64_2_workers": {
                "measured": share,
                "threshold": f">= {MIN_THROUGHPUT_SHARE}",
                "ok": share >= MIN_THROUGHPUT_SHARE,
            },
        },
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'run':<24} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}",
    ]
    for run in report["runs"]:
        latency = run["latency_ms"]
        lines.append(
            f"{run['target']:<24} {run['throughput_rps']:>9.0f} {latency['p50'] or 0:>8.3f} "
            f"{latency['p99'] or 0:>8.3f} {run['error_count']:>7}"
        )
    lines.append("")
    for name, target in report["targets"].items():
        verdict = "ok" if target["ok"] else "MISSED"
        lines.append(f"{name:<40} {target['measured']:>8.3f}  ({target['threshold']})  {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="direct/Envoy alternations")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--envoy-threads", type=int, default=None, help="Envoy --concurrency")
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "examples" / "models")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="envoy-overhead-") as workdir:
        report = measure(args, Path(workdir))
    print(table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {args.output}")
    return 0 if all(t["ok"] for t in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
