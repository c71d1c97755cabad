"""Cached values: every datatype round-trips exactly; any damage is detected, never decoded."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tensorgate.codec.tensors import DATATYPE_TO_DTYPE, TensorCodecError
from tensorgate.server.cache import CorruptValueError, decode_outputs, encode_outputs

KEY = hashlib.sha256(b"request").digest()
NUMERIC = [d for d in DATATYPE_TO_DTYPE if d != "BYTES"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        array = np.empty(count, dtype=np.object_)
        array[:] = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
        return array.reshape(shape)
    # arbitrary bit patterns: NaNs, infinities and FP16 subnormals included
    return draw(hnp.arrays(DATATYPE_TO_DTYPE[datatype], shape, elements=None, fill=st.nothing()))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == np.object_:
        return a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), tensors(), max_size=4))
def test_every_datatype_round_trips_bit_for_bit(outputs: dict[str, np.ndarray]) -> None:
    decoded = decode_outputs(encode_outputs(KEY, outputs), KEY)
    assert list(decoded) == list(outputs)  # output order kept
    for name, array in outputs.items():
        assert same(decoded[name], array), name
        assert not decoded[name].flags.writeable


def test_fp16_and_bytes_outputs_come_back_as_sent() -> None:
    half = np.array([[0.5, -0.0, np.inf], [np.nan, 6.1e-5, 65504]], dtype=np.float16)
    words = np.array([b"", b"\x00\xff", "caf\u00e9".encode()], dtype=np.object_)
    decoded = decode_outputs(encode_outputs(KEY, {"half": half, "words": words}), KEY)
    assert decoded["half"].dtype == np.float16
    assert decoded["half"].tobytes() == half.tobytes()
    assert decoded["words"].tolist() == [b"", b"\x00\xff", "caf\u00e9".encode()]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=3), tensors(), min_size=1, max_size=3), st.data()
)
def test_any_flipped_bit_is_detected(outputs: dict[str, np.ndarray], data) -> None:
    value = bytearray(encode_outputs(KEY, outputs))
    position = data.draw(st.integers(0, len(value) - 1))
    value[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CorruptValueError):
        decode_outputs(bytes(value), KEY)


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[:-1],
        lambda v: v[:10],
        lambda v: v + b"\x00",
        lambda v: b"",
        lambda v: b"garbage" * 20,
    ],
    ids=["one byte short", "truncated prefix", "trailing byte", "empty", "garbage"],
)
def test_truncated_or_foreign_values_are_corrupt(damage) -> None:
    value = encode_outputs(KEY, {"y": np.arange(6, dtype=np.float32)})
    with pytest.raises(CorruptValueError):
        decode_outputs(damage(value), KEY)


def test_a_value_filed_under_another_key_is_corrupt() -> None:
    value = encode_outputs(KEY, {"y": np.arange(3, dtype=np.int64)})
    with pytest.raises(CorruptValueError, match="another key"):
        decode_outputs(value, hashlib.sha256(b"other").digest())


def test_a_well_framed_value_with_a_lying_header_is_corrupt() -> None:
    """CRC-valid but inconsistent: the header claims more elements than the bytes hold."""
    header = b'[["y","FP32",[4],8]]'
    body = np.arange(2, dtype=np.float32).tobytes()
    crc = zlib.crc32(KEY + header + body)
    value = struct.pack("<4sBII", b"TGCV", 1, crc, len(header)) + KEY + header + body
    with pytest.raises(CorruptValueError):
        decode_outputs(value, KEY)


def test_a_tensor_the_protocol_cannot_carry_is_refused_when_encoding() -> None:
    with pytest.raises(TensorCodecError):
        encode_outputs(KEY, {"z": np.zeros(2, dtype=np.complex64)})
