"""Tensors between numpy and the Open Inference Protocol: datatypes, raw bytes and typed contents.

One codec for both sides: the client encodes requests and decodes responses with it, the server decodes
requests and encodes responses. Raw tensors are little-endian; BYTES elements are each prefixed with
their length as a 4-byte little-endian integer (the tritonclient convention).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

#: OIP datatype name -> numpy dtype (little-endian). BYTES is an object array of ``bytes``.
DATATYPE_TO_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

#: which field of InferTensorContents carries each datatype (FP16 travels only as raw bytes)
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_LENGTH = struct.Struct("<I")
_DATATYPE_BY_KIND_AND_SIZE = {
    (dtype.kind, dtype.itemsize): datatype
    for datatype, dtype in DATATYPE_TO_DTYPE.items()
    if datatype != "BYTES"
}


class TensorCodecError(ValueError):
    """A tensor cannot be encoded or decoded; the message names the tensor, expected and received."""


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array; ``str``/``bytes`` arrays travel as BYTES."""
    kind = array.dtype.kind
    if kind in "OSU":
        return "BYTES"
    datatype = _DATATYPE_BY_KIND_AND_SIZE.get((kind, array.dtype.itemsize))
    if datatype is None:
        raise TensorCodecError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")
    return datatype


def dtype_of(datatype: str, name: str = "") -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype, or TensorCodecError naming the tensor."""
    try:
        return DATATYPE_TO_DTYPE[datatype]
    except KeyError:
        supported = ", ".join(DATATYPE_TO_DTYPE)
        raise TensorCodecError(
            f"input '{name}': unsupported datatype '{datatype}'; expected one of {supported}"
        ) from None


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _as_bytes(element: object) -> bytes:
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return element.encode("utf-8")
    if isinstance(element, np.bytes_ | bytearray | memoryview):
        return bytes(element)
    return str(element).encode("utf-8")


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """BYTES elements, each prefixed with its 4-byte little-endian length, in row-major order."""
    parts: list[bytes] = []
    for element in array.reshape(-1):
        data = _as_bytes(element)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(
    raw: bytes | memoryview, shape: Sequence[int], name: str = ""
) -> np.ndarray:
    """Parses length-prefixed BYTES elements into an object array of the given shape."""
    expected = element_count(shape)
    elements: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorCodecError(
                f"input '{name}': BYTES raw content is truncated in a length prefix at byte {offset}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorCodecError(
                f"input '{name}': BYTES element {len(elements)} declares {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != expected:
        raise TensorCodecError(
            f"input '{name}': shape {list(shape)} expects {expected} BYTES elements, "
            f"received {len(elements)}"
        )
    array = np.empty(expected, dtype=np.object_)
    array[:] = elements
    return array.reshape(tuple(shape))


def to_raw(array: np.ndarray) -> bytes:
    """The raw little-endian bytes of a tensor (length-prefixed elements for BYTES)."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return serialize_bytes_tensor(array)
    dtype = DATATYPE_TO_DTYPE[datatype]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_raw(
    raw: bytes | memoryview, datatype: str, shape: Sequence[int], name: str = ""
) -> np.ndarray:
    """A tensor from raw bytes, checking that the byte length matches the shape."""
    dtype = dtype_of(datatype, name)
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw, shape, name)
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise TensorCodecError(
            f"input '{name}': raw content has {len(raw)} bytes, expected {expected} for "
            f"{datatype} shape {list(shape)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def from_contents(contents: Any, datatype: str, shape: Sequence[int], name: str = "") -> np.ndarray:
    """A tensor from typed ``InferTensorContents``, checking the element count against the shape."""
    dtype = dtype_of(datatype, name)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise TensorCodecError(
            f"input '{name}': datatype {datatype} travels only in raw_input_contents, "
            "received typed contents"
        )
    values = getattr(contents, field)
    expected = element_count(shape)
    if len(values) != expected:
        raise TensorCodecError(
            f"input '{name}': shape {list(shape)} expects {expected} elements in {field}, "
            f"received {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(tuple(shape))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        source = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
        if source.size and (source.min() < info.min or source.max() > info.max):
            raise TensorCodecError(
                f"input '{name}': a value of {field} is outside the range of {datatype} "
                f"[{info.min}, {info.max}]"
            )
        return source.astype(dtype).reshape(tuple(shape))
    return np.asarray(values, dtype=dtype).reshape(tuple(shape))
