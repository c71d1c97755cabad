"""Numbers a caller sends are parsed within bounds: shapes, versions, the timeout, the cache flag; and
an unexpected error logs its traceback once per minute."""

from __future__ import annotations

import logging
import math

import pytest

from tensorgate.server.error_log import ErrorLog
from tensorgate.server.errors import InvalidInputError
from tensorgate.server.validation import (
    MAX_TIMEOUT_S,
    cache_parameter,
    canonical_version,
    check_wire_shape,
    timeout_seconds,
)


@pytest.mark.parametrize(
    ("text", "number"),
    [("1", 1), ("01", 1), ("0001", 1), ("0", 0), ("9" * 18, 10**18 - 1)],
)
def test_versions_are_canonical_integers(text: str, number: int) -> None:
    assert canonical_version(text) == number


@pytest.mark.parametrize(
    "text", ["", "1" * 19, "1" * 4301, "-1", "+1", " 1", "1.0", "\u0661", "\u00b2", "a"]
)
def test_what_is_not_a_version_is_none(text: str) -> None:
    assert canonical_version(text) is None


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([0, 2**62], "is larger than any tensor can be"),
        ([2**40, 2**40], "is larger than any tensor can be"),
        ([1] * 65, "expected at most 64 dimensions, received 65"),
        ([1, -1], "has a negative dimension"),
    ],
)
def test_shapes_numpy_cannot_hold_are_invalid(shape: list[int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as error:
        check_wire_shape("x", shape, "FP32")
    assert "input 'x'" in error.value.message


def test_shapes_numpy_can_hold_pass() -> None:
    check_wire_shape("x", [0, 2**40], "BOOL")
    check_wire_shape("x", [1] * 64, "FP32")


@pytest.mark.parametrize("value", [math.nan, 0, -1, -0.5, "10", True, None])
def test_a_timeout_that_is_not_a_positive_number_is_invalid(value: object) -> None:
    with pytest.raises(InvalidInputError, match="parameter 'timeout'"):
        timeout_seconds(value)


def test_a_timeout_is_clamped_to_what_the_server_can_wait() -> None:
    assert timeout_seconds(2**63 - 1) == MAX_TIMEOUT_S
    assert timeout_seconds(math.inf) == MAX_TIMEOUT_S
    assert timeout_seconds(1e300) == MAX_TIMEOUT_S
    assert timeout_seconds(1_500_000) == 1.5


def test_cache_must_be_a_bool() -> None:
    assert cache_parameter({}) is True
    assert cache_parameter({"cache": False}) is False
    for value in ("false", 0, 1.0):
        with pytest.raises(InvalidInputError, match="parameter 'cache': expected a bool"):
            cache_parameter({"cache": value})


def raise_here(text: str) -> Exception:
    try:
        raise RuntimeError(text)
    except RuntimeError as error:
        return error


def test_an_unexpected_error_logs_its_traceback_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = ErrorLog(logging.getLogger("test.errors"), repeat_seconds=60)
    with caplog.at_level(logging.ERROR, "test.errors"):
        for index in range(5):
            errors.report(raise_here(f"boom {index}"), "ModelInfer")  # same place, other messages
        errors.report(KeyError("k"), "ModelInfer")  # another error
    records = [r for r in caplog.records if r.name == "test.errors"]
    assert len(records) == 2
    assert all(r.exc_info for r in records)
    repeated = ErrorLog(logging.getLogger("test.errors"), repeat_seconds=0)
    with caplog.at_level(logging.ERROR, "test.errors"):
        caplog.clear()
        repeated.report(raise_here("a"), "m")
        repeated.report(raise_here("b"), "m")
    assert len(caplog.records) == 2  # once the minute (here: no time at all) has passed
