"""Request validation against a model's tensors: each message names the tensor, expected and received."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgate.server.errors import InvalidInputError
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.validation import validate_request

INPUTS = (TensorSpec("pixels", "FP32", (-1, 64)), TensorSpec("mask", "BOOL", (-1, 2)))
OUTPUTS = (TensorSpec("label", "INT64", (-1,)),)


def good() -> dict[str, np.ndarray]:
    return {"pixels": np.zeros((3, 64), np.float32), "mask": np.ones((3, 2), bool)}


def check(inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = (), max_batch: int = 8) -> None:
    validate_request("m", INPUTS, OUTPUTS, inputs, outputs, max_batch)


def test_valid_request_passes() -> None:
    check(good(), ("label",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("mask"), r"input 'mask' is missing"),
        (lambda r: r.update(extra=np.zeros(1)), r"model 'm' has no input 'extra'"),
        (
            lambda r: r.update(pixels=np.zeros((3, 64), np.float64)),
            r"input 'pixels': expected datatype FP32, received FP64",
        ),
        (
            lambda r: r.update(pixels=np.zeros(64, np.float32)),
            r"input 'pixels': expected rank 2 .*received rank 1",
        ),
        (
            lambda r: r.update(pixels=np.zeros((3, 65), np.float32)),
            r"input 'pixels': dimension 1 must be 64 .*received 65",
        ),
        (lambda r: r.update(mask=np.ones((2, 2), bool)), r"inputs disagree on the batch size"),
    ],
)
def test_bad_inputs_are_named(change: object, message: str) -> None:
    request = good()
    change(request)  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match=message):
        check(request)


def test_unknown_requested_output_is_named() -> None:
    with pytest.raises(
        InvalidInputError, match=r"requested output 'logits' is unknown; .*\['label'\]"
    ):
        check(good(), ("logits",))


def test_a_batch_above_max_batch_size_is_accepted() -> None:
    """The limit bounds what the batcher merges, not what a caller may send."""
    check({"pixels": np.zeros((9, 64), np.float32), "mask": np.ones((9, 2), bool)}, max_batch=8)


def test_unbatched_model_accepts_any_leading_dimension() -> None:
    request = {"pixels": np.zeros((100, 64), np.float32), "mask": np.ones((100, 2), bool)}
    check(request, max_batch=0)
