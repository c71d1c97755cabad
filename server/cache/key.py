"""The cache key of a request: a SHA-256 over everything that can change the answer, and nothing else.

What goes in, each field length-prefixed so that no two different requests frame to the same bytes:

- the model name and the digest of the model file's content (a replaced model never serves stale
  answers, even under the same version number; the version number itself is left out, since two
  versions with the same file give the same answers);
- each input, sorted by name: name, OIP datatype, shape, and its raw little-endian bytes (BYTES
  elements length-prefixed, as on the wire);
- the requested output names, sorted (an empty list, meaning all outputs, is its own key);
- every request parameter except the transport ones (:data:`TRANSPORT_PARAMETERS`, and names that
  start with one of :data:`TRANSPORT_PREFIXES`), sorted by name, with the value's type: ``1``,
  ``True``, ``1.0`` and ``"1"`` are four different keys.

The request id is never part of the key. The rule for parameters is conservative: a parameter the
server does not know might change the output, so only the ones known to be about transport are left
out; an unknown parameter can cost a hit, never serve a wrong answer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from tensorgate.codec.tensors import DATATYPE_TO_DTYPE, datatype_of, serialize_bytes_tensor

#: Request parameters that steer how a request travels, not what it computes.
TRANSPORT_PARAMETERS: frozenset[str] = frozenset({"cache", "timeout", "priority"})
#: Parameter name prefixes reserved for transport (Triton's reserved ``triton_`` namespace).
TRANSPORT_PREFIXES: tuple[str, ...] = ("triton_",)

ParameterValue = bool | int | float | str

_DOMAIN = b"tensorgate.cache.key/1\x00"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


def is_key_parameter(name: str) -> bool:
    """Whether a request parameter can change the answer, and so belongs in the key."""
    return name not in TRANSPORT_PARAMETERS and not name.startswith(TRANSPORT_PREFIXES)


def request_key(
    *,
    model: str,
    model_digest: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = (),
    parameters: Mapping[str, ParameterValue] | None = None,
) -> bytes:
    """The 32-byte key of a request. Hashes the inputs' buffers in place: no copy of numeric tensors."""
    digest = hashlib.sha256(_DOMAIN)
    _put_text(digest, model)
    _put_text(digest, model_digest)
    digest.update(_U32.pack(len(inputs)))
    for name in sorted(inputs):
        _put_tensor(digest, name, inputs[name])
    digest.update(_U32.pack(len(outputs)))
    for output in sorted(outputs):
        _put_text(digest, output)
    relevant = sorted(
        (name, value) for name, value in (parameters or {}).items() if is_key_parameter(name)
    )
    digest.update(_U32.pack(len(relevant)))
    for name, value in relevant:
        _put_text(digest, name)
        _put_parameter(digest, name, value)
    return digest.digest()


def _put_text(digest: hashlib._Hash, text: str) -> None:
    data = text.encode("utf-8")
    digest.update(_U32.pack(len(data)))
    digest.update(data)


def _put_tensor(digest: hashlib._Hash, name: str, array: np.ndarray) -> None:
    datatype = datatype_of(array)
    _put_text(digest, name)
    _put_text(digest, datatype)
    digest.update(_U32.pack(array.ndim))
    digest.update(struct.pack(f"<{array.ndim}q", *array.shape))
    if datatype == "BYTES":
        data: bytes | np.ndarray = serialize_bytes_tensor(array)
        size = len(data)
    else:
        # a no-op for the contiguous little-endian arrays the codec decodes; a copy otherwise
        data = np.ascontiguousarray(array, dtype=DATATYPE_TO_DTYPE[datatype])
        size = data.nbytes
    digest.update(_U64.pack(size))
    digest.update(data)


def _put_parameter(digest: hashlib._Hash, name: str, value: ParameterValue) -> None:
    if isinstance(value, bool):  # before int: bool is an int subclass
        digest.update(b"b\x01" if value else b"b\x00")
    elif isinstance(value, int):
        digest.update(b"i")
        _put_text(digest, str(value))  # any size: int64 and uint64 parameters alike
    elif isinstance(value, float):
        digest.update(b"f" + _F64.pack(value))
    elif isinstance(value, str):
        digest.update(b"s")
        _put_text(digest, value)
    else:
        raise TypeError(f"request parameter '{name}' has unsupported type {type(value).__name__}")
