"""The request-path targets (issue 10), measured side by side in one run on one worker.

One ``tensorgate serve`` worker at a time, cache off unless stated, beside the thin servers
(``tensorgate bench --thin``: grpcio threads and grpc.aio) under the same load generator:

- digits and mlp at concurrency 64: throughput >= 1.0x the faster thin server's; server CPU per
  request <= 1.1x the thin server's on the same gRPC core (the faster one where the core is unknown);
- cnn at concurrency 16 and 64: throughput >= 1.3x the faster thin server's and >= 90% of the
  in-process limit;
- digits and mlp at concurrency 1: p50 <= the thin server's + 0.1 ms, CPU per request <= 1.2x;
- mlp at concurrency 64: batching on >= 1.5x batching off;
- mlp at concurrency 64, the cache on with every request a miss: >= 95% of the cache off.

Run from the repository root, on a quiet machine (every figure is noisy on a busy one)::

    python benchmarks/request_path_targets.py                   # about 5 minutes
    python benchmarks/request_path_targets.py --quick           # about 3 minutes, rougher
    python benchmarks/request_path_targets.py --grpc-core aio   # pass the server's core (compared
                                                           # with the thin server on the same)

Prints one row per target (target, measured, holds) and writes the verdicts and every report to
``benchmarks/results/request_path_targets.json``; exits 0 when every target holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Report = dict[str, Any]

OVERHEAD_BOUND = ("digits", "mlp")
COMPUTE_BOUND = "cnn"
THIN_THROUGHPUT = 1.0
THIN_CPU = 1.1
CNN_THIN_THROUGHPUT = 1.3
CNN_SHARE_OF_LIMIT = 0.9
P50_MARGIN_MS = 0.1
C1_THIN_CPU = 1.2
BATCHING_SPEEDUP = 1.5
CACHE_MISS_SHARE = 0.95
#: labels of the server configurations the script starts
SERVER, BATCHING_OFF, CACHE_ON = "server", "batching-off", "cache-on-all-miss"


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    holds: bool | None  # None: not measured

    def row(self) -> str:
        holds = {True: "yes", False: "NO", None: "not measured"}[self.holds]
        return f"| {self.target} | {self.measured} | {holds} |"


def find_run(report: Report, target: str, concurrency: int) -> Report | None:
    for run in report["runs"]:
        if (run["target"], run["mode"], run["concurrency"]) == (target, "closed", concurrency):
            return run
    return None


def _check(target: str, value: float | None, text: str, holds: bool | None) -> Verdict:
    if value is None:
        return Verdict(target, "not measured", None)
    return Verdict(target, text, holds)


def overhead_targets(model: str, report: Report) -> Iterator[Verdict]:
    """digits and mlp: throughput and CPU at concurrency 64, p50 and CPU at concurrency 1."""
    run = find_run(report, SERVER, 64)
    ratios = (run or {}).get("ratios", {})
    reference = (run or {}).get("thin_reference")
    x_thin = ratios.get("throughput_vs_thin")
    yield _check(
        f"{model}, c=64: throughput >= {THIN_THROUGHPUT}x the faster thin",
        x_thin,
        f"{x_thin:.2f}x" if x_thin is not None else "",
        x_thin is not None and x_thin >= THIN_THROUGHPUT,
    )
    cpu = ratios.get("server_cpu_vs_thin")
    yield _check(
        f"{model}, c=64: server CPU/request <= {THIN_CPU}x thin (same core)",
        cpu,
        f"{cpu:.2f}x {reference}" if cpu is not None else "",
        cpu is not None and cpu <= THIN_CPU,
    )
    run = find_run(report, SERVER, 1)
    ratios = (run or {}).get("ratios", {})
    reference = (run or {}).get("thin_reference")
    p50 = ratios.get("p50_minus_thin_ms")
    yield _check(
        f"{model}, c=1: p50 <= thin + {P50_MARGIN_MS} ms",
        p50,
        f"{p50:+.3f} ms against {reference}" if p50 is not None else "",
        p50 is not None and p50 <= P50_MARGIN_MS,
    )
    cpu = ratios.get("server_cpu_vs_thin")
    yield _check(
        f"{model}, c=1: server CPU/request <= {C1_THIN_CPU}x thin",
        cpu,
        f"{cpu:.2f}x {reference}" if cpu is not None else "",
        cpu is not None and cpu <= C1_THIN_CPU,
    )


def cnn_targets(report: Report) -> Iterator[Verdict]:
    for concurrency in (16, 64):
        run = find_run(report, SERVER, concurrency)
        ratios = (run or {}).get("ratios", {})
        x_thin, x_limit = ratios.get("throughput_vs_thin"), ratios.get("throughput_vs_limit")
        yield _check(
            f"cnn, c={concurrency}: throughput >= {CNN_THIN_THROUGHPUT}x the faster thin",
            x_thin,
            f"{x_thin:.2f}x" if x_thin is not None else "",
            x_thin is not None and x_thin >= CNN_THIN_THROUGHPUT,
        )
        yield _check(
            f"cnn, c={concurrency}: throughput >= {CNN_SHARE_OF_LIMIT:.0%} of the in-process limit",
            x_limit,
            f"{x_limit:.1%}" if x_limit is not None else "",
            x_limit is not None and x_limit >= CNN_SHARE_OF_LIMIT,
        )


def throughput_ratio(report: Report, label: str, baseline: str, concurrency: int) -> float | None:
    """``label``'s throughput over ``baseline``'s at ``concurrency``, None when one is missing."""
    run, base = find_run(report, label, concurrency), find_run(report, baseline, concurrency)
    if not run or not base or not base["throughput_rps"]:
        return None
    return float(run["throughput_rps"] / base["throughput_rps"])


def mlp_config_targets(report: Report) -> Iterator[Verdict]:
    """Batching on against off, and the cache on (all misses) against off, at concurrency 64."""
    batching = throughput_ratio(report, SERVER, BATCHING_OFF, 64)
    yield _check(
        f"mlp, c=64: batching on >= {BATCHING_SPEEDUP}x off",
        batching,
        f"{batching:.2f}x" if batching is not None else "",
        batching is not None and batching >= BATCHING_SPEEDUP,
    )
    cache = throughput_ratio(report, CACHE_ON, SERVER, 64)
    yield _check(
        f"mlp, c=64: cache on, all misses >= {CACHE_MISS_SHARE:.0%} of cache off",
        cache,
        f"{cache:.1%}" if cache is not None else "",
        cache is not None and cache >= CACHE_MISS_SHARE,
    )


def evaluate(reports: dict[str, Report]) -> list[Verdict]:
    """Every target, from the reports of ``run_scenario`` by model (ratios already added)."""
    verdicts: list[Verdict] = []
    for model in OVERHEAD_BOUND:
        verdicts += overhead_targets(model, reports.get(model, {"runs": []}))
    verdicts += cnn_targets(reports.get(COMPUTE_BOUND, {"runs": []}))
    verdicts += mlp_config_targets(reports.get("mlp", {"runs": []}))
    return verdicts


def scenarios(
    repository: Path, cache_dir: Path, duration: float, warmup: float, grpc_core: str | None
) -> dict[str, dict[str, Any]]:
    """The scenario of each model: documents for ``Scenario.model_validate``."""
    core = [f"--grpc-core={grpc_core}"] if grpc_core else []
    off = ["--no-cache", *core]
    common = {
        "model_repository": str(repository),
        "serve": True,
        "thin": True,
        "duration": duration,
        "warmup": warmup,
    }
    mlp_servers = [
        {"label": SERVER, "server_args": off},
        {"label": BATCHING_OFF, "server_args": off, "batching": False},
        {"label": CACHE_ON, "server_args": [f"--cache-dir={cache_dir}", *core]},
    ]
    return {
        "digits": {**common, "model": "digits", "concurrency": [1, 64], "servers": [
            {"label": SERVER, "server_args": off}
        ]},
        "mlp": {**common, "model": "mlp", "concurrency": [1, 64], "servers": mlp_servers},
        "cnn": {**common, "model": "cnn", "concurrency": [16, 64], "limit": True,
                "limit_batches": [1, 8, 32], "servers": [{"label": SERVER, "server_args": off}]},
    }  # fmt: skip


def measure(
    repository: Path, duration: float, warmup: float, grpc_core: str | None, models: Sequence[str]
) -> dict[str, Report]:
    from tensorgate.tools.bench.runner import run_scenario
    from tensorgate.tools.bench.scenario import Scenario

    reports: dict[str, Report] = {}
    with tempfile.TemporaryDirectory(prefix="tensorgate-targets-cache-") as cache_dir:
        plans = scenarios(repository, Path(cache_dir), duration, warmup, grpc_core)
        for model in models:
            plan = Scenario.model_validate({"name": f"request_path_{model}", **plans[model]})
            reports[model] = run_scenario(plan, show_progress=sys.stderr.isatty())
    return reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("examples/models"))
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    parser.add_argument("--quick", action="store_true", help="--duration 1.5 --warmup 0.5")
    parser.add_argument("--grpc-core", choices=("threads", "aio"), help="the server's gRPC core")
    parser.add_argument("--models", default="digits,mlp,cnn", help="a subset, comma-separated")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/request_path_targets.json")
    )
    args = parser.parse_args()
    duration, warmup = (1.5, 0.5) if args.quick else (args.duration, args.warmup)
    models = [m for m in args.models.split(",") if m]
    reports = measure(args.model_repository, duration, warmup, args.grpc_core, models)
    verdicts = evaluate(reports)
    print("| target | measured | holds |")
    print("|---|---|---|")
    for verdict in verdicts:
        print(verdict.row())
    loads = [r["host"]["load_average"] for r in reports.values()]
    print(f"\nhost load average (1, 5, 15 min) when each model began: {loads}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"verdicts": [asdict(v) for v in verdicts], "reports": reports}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(v.holds is False for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
