"""The optimization targets of docs/benchmarks.md, measured on a copy of the example repository.

- ``mlp``: the ``int8`` variant's batch-32 throughput is at least 2x the original's on CPU;
- ``digits``: the int8 variant accepted with ``accuracy_drop<=0.005`` on the held-out set and its
  labels loses at most 0.5 points of accuracy.

Run on a quiet machine::

    python benchmarks/optimize_targets.py --measure-seconds 10

The example repository is never written to: the variants and the new version go to a temporary copy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

from tensorgate.examples.datasets import digits_split
from tensorgate.tools.optimize.pipeline import OptimizeRequest, optimize_model
from tensorgate.tools.optimize.report import table

MIN_INT8_SPEEDUP = 2.0
MAX_ACCURACY_DROP = 0.005


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("examples/models"))
    parser.add_argument("--measure-seconds", type=float, default=10.0)
    args = parser.parse_args()
    console = Console(width=140)
    ok = True
    with tempfile.TemporaryDirectory(prefix="tensorgate-bench-") as folder:
        repo = Path(folder)
        for name in ("mlp", "digits"):
            _copy(args.model_repository / name, repo / name)

        mlp = optimize_model(
            OptimizeRequest(repo, "mlp", variants=["int8"], measure_seconds=args.measure_seconds)
        )
        console.print(table(mlp.report))
        speedup = mlp.report["variants"]["int8"]["metrics"]["speedup"]
        passed = speedup >= MIN_INT8_SPEEDUP
        ok &= passed
        print(
            f"mlp int8 batch-32 throughput: {speedup:.2f}x the original's (target >= 2x): "
            f"{'met' if passed else 'MISSED'}"
        )

        _, x_test, _, y_test = digits_split()
        np.save(repo / "x_test.npy", x_test)
        np.save(repo / "y_test.npy", y_test)
        digits = optimize_model(
            OptimizeRequest(
                repo,
                "digits",
                variants=["int8"],
                validation=repo / "x_test.npy",
                labels=repo / "y_test.npy",
                accept=f"accuracy_drop<={MAX_ACCURACY_DROP}",
                measure_seconds=args.measure_seconds,
            )
        )
        console.print(table(digits.report))
        entry = digits.report["variants"]["int8"]
        drop = entry["metrics"]["accuracy_drop"]
        passed = digits.selected == "int8" and drop <= MAX_ACCURACY_DROP
        ok &= passed
        print(
            f"digits int8: accuracy {entry['accuracy']:.4f} vs {digits.report['original']['accuracy']:.4f}"
            f" (drop {drop * 100:.2f} points, target <= 0.5), accepted as version "
            f"{digits.new_version}: {'met' if passed else 'MISSED'}"
        )
    return 0 if ok else 1


def _copy(source: Path, target: Path) -> None:
    """The model's config.toml and numeric versions, without any earlier variants."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("variants"))


if __name__ == "__main__":
    sys.exit(main())
