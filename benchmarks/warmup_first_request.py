"""First-request latency after a model loads, with and without warmup, against the steady-state p50.

Each trial runs in a fresh Python process (so no trial inherits another's warm caches): it opens the
model's ONNX Runtime session as the server does (options of its config.toml), warms it up likewise
(or not), then times one batch-1 request and then ``--steady`` more. Prints the median over trials::

    python benchmarks/warmup_first_request.py --model-repository examples/models --model cnn --trials 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def trial(model_dir: Path, warmup: bool, steady: int) -> dict[str, float]:
    """One load, optional warmup, one timed first request and ``steady`` more; times in ms."""
    from tensorgate.server.inputs import random_feed
    from tensorgate.server.model_config import load_model_config
    from tensorgate.server.sessions import create_session
    from tensorgate.server.settings import Settings
    from tensorgate.server.tensors import session_specs
    from tensorgate.server.warmup import warm_up

    config = load_model_config(model_dir)
    version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    settings = Settings()
    started = time.perf_counter()
    session = create_session(
        model_dir / str(version) / "model.onnx",
        model_dir.name,
        config.session,
        settings.worker_intra_op_threads,
        settings.inter_op_threads,
    )
    load_ms = (time.perf_counter() - started) * 1e3
    inputs, _ = session_specs(session)
    warmup_ms = 0.0
    if warmup:
        result = warm_up(
            lambda feed: session.run(None, dict(feed)), inputs, config.warmup, model_dir
        )
        warmup_ms = result.seconds * 1e3
    # A request unlike the warmup inputs (another seed), at batch 1.
    request = random_feed(inputs, 1, np.random.default_rng(12345))
    started = time.perf_counter()
    session.run(None, request)
    first_ms = (time.perf_counter() - started) * 1e3
    durations = []
    for _ in range(steady):
        started = time.perf_counter()
        session.run(None, request)
        durations.append((time.perf_counter() - started) * 1e3)
    return {
        "load_ms": load_ms,
        "warmup_ms": warmup_ms,
        "first_ms": first_ms,
        "steady_p50_ms": float(np.percentile(durations, 50)),
    }


def run_trials(model_dir: Path, warmup: bool, trials: int, steady: int) -> list[dict[str, float]]:
    """``trials`` fresh processes, each running one ``trial``."""
    results = []
    for _ in range(trials):
        command = [sys.executable, __file__, "--child", "--model-dir", str(model_dir)]
        command += ["--steady", str(steady), "--warmup" if warmup else "--no-warmup"]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("examples/models"))
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--trials", type=int, default=5, help="fresh processes per mode")
    parser.add_argument("--steady", type=int, default=200, help="requests after the first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(trial(args.model_dir, args.warmup, args.steady)))
        return 0

    model_dir = args.model_repository / args.model
    print(f"model {args.model}: median of {args.trials} fresh processes, batch-1 requests")
    print(
        f"{'mode':<12}{'load ms':>10}{'warmup ms':>11}{'first ms':>10}{'p50 ms':>9}{'first/p50':>11}"
    )
    for warmup in (False, True):
        results = run_trials(model_dir, warmup, args.trials, args.steady)
        median = {k: statistics.median(r[k] for r in results) for k in results[0]}
        ratio = statistics.median(r["first_ms"] / r["steady_p50_ms"] for r in results)
        print(
            f"{'warmup' if warmup else 'no warmup':<12}{median['load_ms']:>10.2f}"
            f"{median['warmup_ms']:>11.2f}{median['first_ms']:>10.3f}"
            f"{median['steady_p50_ms']:>9.3f}{ratio:>10.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
