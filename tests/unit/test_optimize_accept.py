"""--accept rules: parsing, the reasons a variant fails, and the choice of the fastest passing one."""

from __future__ import annotations

import pytest

from tensorgate.tools.optimize.accept import METRICS, Criterion, choose, failures, parse_criteria
from tensorgate.tools.optimize.errors import OptimizeError


def test_parses_the_documented_rule() -> None:
    criteria = parse_criteria("top1_agreement>=0.99, accuracy_drop <= 0.005")

    assert criteria == [
        Criterion("top1_agreement", ">=", 0.99),
        Criterion("accuracy_drop", "<=", 0.005),
    ]
    assert [str(c) for c in criteria] == ["top1_agreement>=0.99", "accuracy_drop<=0.005"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("top1_agreement=0.99", "cannot read criterion"),
        ("top1_agreement>=", "cannot read criterion"),
        ("speedup>=fast", "cannot read criterion"),
        ("speedup>=1..2", "cannot read number"),
        ("latency>=2", "unknown metric 'latency'"),
    ],
)
def test_malformed_rules_say_what_is_wrong(rule: str, message: str) -> None:
    with pytest.raises(OptimizeError, match=message):
        parse_criteria(rule)


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(OptimizeError) as caught:
        parse_criteria("f1>=0.9")
    assert all(name in caught.value.message for name in METRICS)


def test_failures_name_the_metric_its_value_and_the_criterion() -> None:
    criteria = parse_criteria("top1_agreement>=0.99,speedup>2,max_abs_diff<0.1")
    metrics = {"top1_agreement": 0.985, "speedup": 2.0, "max_abs_diff": 0.05}

    assert failures(criteria, metrics) == [
        "top1_agreement=0.985 fails top1_agreement>=0.99",
        "speedup=2 fails speedup>2",
    ]
    assert failures(criteria, {**metrics, "top1_agreement": 0.99, "speedup": 2.5}) == []


def test_a_metric_that_was_not_measured_fails() -> None:
    criteria = parse_criteria("top1_agreement>=0.5")

    assert failures(criteria, {"top1_agreement": None}) == ["top1_agreement not measured"]
    assert failures(criteria, {}) == ["top1_agreement not measured"]


def test_choose_takes_the_highest_throughput() -> None:
    assert choose({"graph": 1000.0, "int8": 3200.0, "fp16": 900.0}) == "int8"
    assert choose({}) is None
