"""The tensor codec shared by the client and the server."""

from __future__ import annotations

import numpy as np
import pytest

from tensorgate.codec.tensors import (
    CONTENTS_FIELD,
    DATATYPE_TO_DTYPE,
    TensorCodecError,
    datatype_of,
    from_contents,
    from_raw,
    to_raw,
)
from tensorgate.proto import inference_pb2 as pb


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if datatype == "BYTES":
        values = np.array(
            [f"item-{i}-é".encode() for i in range(int(np.prod(shape)))], dtype=object
        )
        return values.reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    dtype = DATATYPE_TO_DTYPE[datatype]
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("datatype", list(DATATYPE_TO_DTYPE))
def test_raw_round_trip_for_every_datatype(datatype: str) -> None:
    array = sample(datatype)
    assert datatype_of(array) == datatype
    back = from_raw(to_raw(array), datatype, array.shape, "x")
    assert back.shape == array.shape
    assert back.dtype == DATATYPE_TO_DTYPE[datatype]
    assert (back == array).all()


@pytest.mark.parametrize("datatype", list(CONTENTS_FIELD))
def test_typed_contents_decode_for_every_datatype(datatype: str) -> None:
    array = sample(datatype)
    contents = pb.InferTensorContents()
    getattr(contents, CONTENTS_FIELD[datatype]).extend(array.reshape(-1).tolist())
    back = from_contents(contents, datatype, array.shape, "x")
    assert back.dtype == DATATYPE_TO_DTYPE[datatype]
    if datatype == "FP32":
        np.testing.assert_allclose(back, array, rtol=1e-6)
    else:
        assert (back == array).all()


def test_str_arrays_travel_as_utf8_bytes() -> None:
    array = np.array(["a", "żółw"])
    back = from_raw(to_raw(array), "BYTES", (2,), "s")
    assert back.tolist() == [b"a", "żółw".encode()]


def test_raw_length_mismatch_names_tensor_expected_and_received() -> None:
    with pytest.raises(
        TensorCodecError, match=r"input 'pixels'.*12 bytes, expected 16 for FP32 shape \[2, 2\]"
    ):
        from_raw(b"\0" * 12, "FP32", (2, 2), "pixels")


def test_unknown_datatype_is_named() -> None:
    with pytest.raises(TensorCodecError, match=r"input 'x': unsupported datatype 'FP8'"):
        from_raw(b"", "FP8", (0,), "x")


def test_truncated_bytes_element_is_reported() -> None:
    raw = to_raw(np.array([b"abcdef"], dtype=object))[:-2]
    with pytest.raises(TensorCodecError, match="declares 6 bytes but only 4 remain"):
        from_raw(raw, "BYTES", (1,), "s")


def test_bytes_element_count_must_match_shape() -> None:
    raw = to_raw(np.array([b"a", b"b"], dtype=object))
    with pytest.raises(TensorCodecError, match=r"shape \[3\] expects 3 BYTES elements, received 2"):
        from_raw(raw, "BYTES", (3,), "s")


def test_typed_contents_count_and_range_are_checked() -> None:
    contents = pb.InferTensorContents(int_contents=[1, 2, 300])
    with pytest.raises(TensorCodecError, match="outside the range of INT8"):
        from_contents(contents, "INT8", (3,), "small")
    with pytest.raises(
        TensorCodecError, match=r"shape \[4\] expects 4 elements in int_contents, received 3"
    ):
        from_contents(contents, "INT32", (4,), "small")


def test_fp16_typed_contents_are_refused_with_a_clear_message() -> None:
    with pytest.raises(TensorCodecError, match="FP16 travels only in raw_input_contents"):
        from_contents(pb.InferTensorContents(), "FP16", (0,), "half")
