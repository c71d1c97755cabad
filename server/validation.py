"""Checks a decoded request against the model's inputs and outputs; every message names the tensor."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np

from tensorgate.codec.tensors import datatype_of
from tensorgate.server.errors import InvalidInputError
from tensorgate.server.tensors import DYNAMIC, TensorSpec


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_tensor(spec: TensorSpec, array: np.ndarray) -> None:
    """Datatype, rank and every fixed dimension of one input."""
    received = datatype_of(array)
    if received != spec.datatype:
        raise InvalidInputError(
            f"input '{spec.name}': expected datatype {spec.datatype}, received {received}"
        )
    if array.ndim != len(spec.shape):
        raise InvalidInputError(
            f"input '{spec.name}': expected rank {len(spec.shape)} (shape {_shape_text(spec.shape)}), "
            f"received rank {array.ndim} (shape {_shape_text(array.shape)})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want != DYNAMIC and want != got:
            raise InvalidInputError(
                f"input '{spec.name}': dimension {axis} must be {want} (shape "
                f"{_shape_text(spec.shape)}), received {got} (shape {_shape_text(array.shape)})"
            )


def validate_request(
    model_name: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    received: MutableMapping[str, np.ndarray],
    requested_outputs: tuple[str, ...],
    max_batch_size: int,
) -> None:
    """Raises InvalidInputError for a missing, unknown or ill-shaped input, or an unknown output.

    BYTES inputs are replaced in ``received`` by their text, the form ONNX Runtime takes.
    """
    expected_names = {spec.name for spec in inputs}
    for name in received:
        if name not in expected_names:
            raise InvalidInputError(
                f"model '{model_name}' has no input '{name}'; expected inputs: {sorted(expected_names)}"
            )
    for spec in inputs:
        array = received.get(spec.name)
        if array is None:
            raise InvalidInputError(
                f"input '{spec.name}' is missing; model '{model_name}' expects inputs "
                f"{sorted(expected_names)}, received {sorted(received)}"
            )
        check_tensor(spec, array)
        if spec.datatype == "BYTES":
            received[spec.name] = as_onnx_strings(spec.name, array)
    output_names = {spec.name for spec in outputs}
    for name in requested_outputs:
        if name not in output_names:
            raise InvalidInputError(
                f"requested output '{name}' is unknown; model '{model_name}' has outputs "
                f"{sorted(output_names)}"
            )
    if max_batch_size > 0:
        _check_batch(inputs, received, max_batch_size)


def _check_batch(
    inputs: tuple[TensorSpec, ...], received: Mapping[str, np.ndarray], limit: int
) -> None:
    """Inputs of a batched model agree on the batch size. A batch above ``limit`` is allowed: the
    batcher runs it alone, in runs of at most ``limit`` rows (``limit`` bounds what it merges)."""
    sizes = {spec.name: int(received[spec.name].shape[0]) for spec in inputs if spec.shape}
    distinct = set(sizes.values())
    if len(distinct) > 1:
        raise InvalidInputError(f"inputs disagree on the batch size (dimension 0): {sizes}")


def as_onnx_strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as ``str``: ONNX Runtime's Python API holds string tensors as UTF-8 text."""
    flat = array.reshape(-1)
    text = np.empty(flat.shape, dtype=np.object_)
    for index, element in enumerate(flat):
        if isinstance(element, str):
            text[index] = element
            continue
        try:
            text[index] = bytes(element).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"input '{name}': BYTES element {index} is not valid UTF-8; "
                "ONNX Runtime string tensors hold UTF-8 text"
            ) from None
    return text.reshape(array.shape)
