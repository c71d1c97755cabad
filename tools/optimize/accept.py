"""``--accept`` criteria: parsing, checking a variant's metrics, and choosing the fastest that passes.

A rule is a comma-separated list of ``METRIC OP NUMBER`` with OP one of ``>=``, ``<=``, ``>``, ``<``,
for example ``top1_agreement>=0.99,accuracy_drop<=0.005``. Shares are fractions (0.005 is half a
point of accuracy). The fastest variant is the one of highest batch-32 throughput.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tensorgate.tools.optimize.errors import OptimizeError

#: Every metric a rule may name, and what it means.
METRICS: dict[str, str] = {
    "top1_agreement": "share of rows whose top-1 class matches the original's (classifiers)",
    "accuracy": "the variant's accuracy against --labels",
    "accuracy_drop": "the original's accuracy minus the variant's (needs --labels)",
    "max_abs_diff": "largest absolute difference from the original over every float output",
    "mean_abs_diff": "mean absolute difference from the original, worst float output",
    "speedup": "batch-32 throughput over the original's",
    "latency_speedup": "the original's batch-1 p50 latency over the variant's",
    "size_ratio": "file size over the original's",
}

#: Metrics that can only be measured with labels.
LABEL_METRICS = frozenset({"accuracy", "accuracy_drop"})

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_CRITERION = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Criterion:
    """One ``METRIC OP THRESHOLD`` condition."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def failure(self, metrics: Mapping[str, float | None]) -> str | None:
        """Why ``metrics`` fail this condition, or ``None`` when they pass."""
        value = metrics.get(self.metric)
        if value is None:
            return f"{self.metric} not measured"
        if not _OPERATORS[self.op](value, self.threshold):
            return f"{self.metric}={value:.6g} fails {self}"
        return None


def parse_criteria(text: str) -> list[Criterion]:
    """Parses a rule such as ``top1_agreement>=0.99,accuracy_drop<=0.005``."""
    criteria: list[Criterion] = []
    for part in text.split(","):
        match = _CRITERION.match(part)
        if match is None:
            raise OptimizeError(f"cannot read criterion {part.strip()!r}: want METRIC>=NUMBER")
        metric, op, number = match.groups()
        if metric not in METRICS:
            raise OptimizeError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
        try:
            threshold = float(number)
        except ValueError:
            raise OptimizeError(f"cannot read number {number!r} in {part.strip()!r}") from None
        criteria.append(Criterion(metric, op, threshold))
    return criteria


def failures(criteria: list[Criterion], metrics: Mapping[str, float | None]) -> list[str]:
    """Every criterion the metrics fail, as messages; empty when all pass."""
    return [reason for c in criteria if (reason := c.failure(metrics)) is not None]


def choose(throughputs: Mapping[str, float]) -> str | None:
    """The fastest of the passing variants (highest batch-32 throughput); ``None`` if none."""
    return max(throughputs, key=throughputs.__getitem__, default=None)
