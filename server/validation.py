"""Checks a decoded request against the model's inputs and outputs; every message names the tensor."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, MutableMapping, Sequence

import numpy as np

from tensorgate.codec.tensors import DATATYPE_TO_DTYPE, datatype_of
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


# -- numbers the caller sends, parsed within bounds

#: numpy's largest rank (``np.empty`` refuses more dimensions)
MAX_RANK = 64
#: the most digits a version may have: int64, as Triton holds versions
_MAX_VERSION_DIGITS = 18
#: the longest a request may ask the server to wait (a year): beyond, waits overflow
MAX_TIMEOUT_S = 365 * 24 * 3600.0
_MAX_BYTES = sys.maxsize


def check_wire_shape(name: str, shape: Sequence[int], datatype: str) -> None:
    """A shape numpy can hold: no negative dimension, at most MAX_RANK dimensions, and a byte size
    (zero-sized dimensions aside) within what an array can address. Checked before any reshape."""
    if len(shape) > MAX_RANK:
        raise InvalidInputError(
            f"input '{name}': expected at most {MAX_RANK} dimensions, received {len(shape)}"
        )
    if any(d < 0 for d in shape):
        raise InvalidInputError(f"input '{name}': shape {list(shape)} has a negative dimension")
    itemsize = DATATYPE_TO_DTYPE[datatype].itemsize if datatype in DATATYPE_TO_DTYPE else 1
    if math.prod(max(d, 1) for d in shape) * itemsize > _MAX_BYTES:
        raise InvalidInputError(
            f"input '{name}': shape {list(shape)} is larger than any tensor can be "
            f"(at most {_MAX_BYTES} bytes)"
        )


def canonical_version(text: str) -> int | None:
    """A version as a number: ASCII digits only, at most 18 of them ("01" is 1, as in Triton);
    None for anything that is not a version."""
    if not text or len(text) > _MAX_VERSION_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def timeout_seconds(value: object) -> float:
    """The OIP ``timeout`` parameter (µs) in seconds, clamped to MAX_TIMEOUT_S; INVALID_ARGUMENT
    for anything but a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInputError(
            f"parameter 'timeout': expected a positive number of microseconds, received {value!r}"
        )
    if math.isinf(value):
        return MAX_TIMEOUT_S
    return min(value / 1e6, MAX_TIMEOUT_S)


def cache_parameter(parameters: Mapping[str, object]) -> bool:
    """The ``cache`` request parameter: a bool, True when absent."""
    value = parameters.get("cache", True)
    if not isinstance(value, bool):
        raise InvalidInputError(
            "parameter 'cache': expected a bool parameter (bool_param true or false), "
            f"received {type(value).__name__} {value!r}"
        )
    return value


def check_one_content_kind(name: str, has_raw: bool, typed_bytes: int) -> None:
    """Raw and typed contents of one input never travel together (as in Triton)."""
    if has_raw and typed_bytes:
        raise InvalidInputError(
            f"input '{name}': expected its data either in raw_input_contents or in typed "
            "contents, received both"
        )
