"""Cached values: output tensors in a small self-describing binary format. Never pickle.

Layout (little-endian)::

    magic "TGCV" | version u8 | crc32 u32 | header length u32 | key (32 bytes) | header | tensor bytes

The header is JSON: ``[[name, datatype, shape, byte length], ...]`` in output order; the tensor bytes
follow in the same order, each in the raw wire form of the shared codec. The CRC covers the key, the
header and the tensor bytes, and the key is checked against the one looked up, so a flipped bit or an
entry filed under the wrong key decodes to :class:`CorruptValueError`, never to a wrong answer.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import cast

import numpy as np

from tensorgate.codec.tensors import datatype_of, from_raw, to_raw

Outputs = dict[str, np.ndarray]

_MAGIC = b"TGCV"
_VERSION = 1
_PREFIX = struct.Struct("<4sBII")
_KEY_BYTES = 32


class CorruptValueError(ValueError):
    """A cached value does not decode: the caller treats it as a miss and deletes it."""


def encode_outputs(key: bytes, outputs: Mapping[str, np.ndarray]) -> bytes:
    """One bytes value holding the key and every output tensor. Raises TensorCodecError for a
    tensor the protocol cannot carry."""
    if len(key) != _KEY_BYTES:
        raise ValueError(f"a cache key has {_KEY_BYTES} bytes, received {len(key)}")
    raws: list[bytes] = []
    entries: list[list[object]] = []
    for name, array in outputs.items():
        raw = to_raw(array)
        raws.append(raw)
        entries.append([name, datatype_of(array), list(array.shape), len(raw)])
    header = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    crc = zlib.crc32(key)
    crc = zlib.crc32(header, crc)
    for raw in raws:
        crc = zlib.crc32(raw, crc)
    return b"".join([_PREFIX.pack(_MAGIC, _VERSION, crc, len(header)), key, header, *raws])


def decode_outputs(value: bytes, key: bytes) -> Outputs:
    """The output tensors of a value, as read-only arrays over its bytes (no copy for numeric ones)."""
    try:
        return _decode(memoryview(value), key)
    except CorruptValueError:
        raise
    except (ValueError, TypeError, KeyError, struct.error) as error:
        raise CorruptValueError(f"cached value does not decode: {error}") from None


def _decode(view: memoryview, key: bytes) -> Outputs:
    if len(view) < _PREFIX.size + _KEY_BYTES:
        raise CorruptValueError(f"cached value is truncated at {len(view)} bytes")
    magic, version, crc, header_length = _PREFIX.unpack_from(view)
    if magic != _MAGIC or version != _VERSION:
        raise CorruptValueError(f"cached value has magic {magic!r} version {version}")
    if zlib.crc32(view[_PREFIX.size :]) != crc:
        raise CorruptValueError("cached value fails its CRC")
    stored_key = view[_PREFIX.size : _PREFIX.size + _KEY_BYTES]
    if stored_key != key:
        raise CorruptValueError("cached value belongs to another key")
    offset = _PREFIX.size + _KEY_BYTES
    entries = json.loads(bytes(view[offset : offset + header_length]))
    offset += header_length
    outputs: Outputs = {}
    for name, datatype, shape, length in entries:
        if offset + length > len(view):
            raise CorruptValueError(f"cached output '{name}' runs past the end of the value")
        # from_raw needs only the buffer protocol: a slice of the view keeps the value copy-free
        raw = cast(bytes, view[offset : offset + length])
        array = from_raw(raw, datatype, shape, name)
        array.flags.writeable = False
        outputs[name] = array
        offset += length
    if offset != len(view):
        raise CorruptValueError(f"cached value has {len(view) - offset} trailing bytes")
    return outputs
