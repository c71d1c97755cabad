"""The cache key: different requests never share one, identical requests always do."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tensorgate.codec.tensors import datatype_of, to_raw
from tensorgate.server.cache import is_key_parameter, request_key

# Small alphabets on purpose: random pairs then often agree on some fields and differ in one.
NAMES = st.sampled_from(["a", "b", "ab"])
DTYPES = st.sampled_from([np.uint8, np.int8, np.bool_, np.float16, np.int16, np.object_])
PARAMETER_NAMES = st.sampled_from(["k", "cache", "timeout", "priority", "triton_x", "sequence_id"])
PARAMETER_VALUES = st.one_of(
    st.booleans(),
    st.integers(-2, 2),
    st.integers(2**63, 2**64 - 1),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["", "1", "a"]),
)


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(DTYPES)
    shape = draw(st.sampled_from([(), (0,), (1,), (2,), (1, 2), (2, 1), (2, 2)]))
    count = int(np.prod(shape))
    if dtype is np.object_:
        elements = draw(st.lists(st.binary(max_size=2), min_size=count, max_size=count))
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    raw = draw(st.binary(min_size=count * np.dtype(dtype).itemsize, max_size=count * 2))
    if dtype is np.bool_:
        return np.frombuffer(bytes(b & 1 for b in raw[:count]), dtype=np.bool_).reshape(shape)
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(raw[: count * itemsize], dtype=dtype).reshape(shape)


@st.composite
def requests(draw: st.DrawFn) -> dict:
    return {
        "model": draw(st.sampled_from(["m", "n"])),
        "model_digest": draw(st.sampled_from(["d1", "d2"])),
        "inputs": draw(st.dictionaries(NAMES, tensors(), max_size=2)),
        "outputs": tuple(draw(st.lists(NAMES, max_size=2))),
        "parameters": draw(st.dictionaries(PARAMETER_NAMES, PARAMETER_VALUES, max_size=2)),
    }


def canonical(request: dict) -> tuple:
    """What a request means, computed independently of the key's hashing code."""

    def value(v: object) -> tuple:
        if isinstance(v, float):
            return ("float", struct.pack("<d", v))
        return (type(v).__name__, v)

    return (
        request["model"],
        request["model_digest"],
        tuple(
            sorted(
                (name, datatype_of(a), a.shape, to_raw(a)) for name, a in request["inputs"].items()
            )
        ),
        tuple(sorted(request["outputs"])),
        tuple(
            sorted(
                (name, value(v))
                for name, v in request["parameters"].items()
                if is_key_parameter(name)
            )
        ),
    )


@st.composite
def request_pairs(draw: st.DrawFn) -> tuple[dict, dict]:
    """Two requests, the second often the first with one field drawn again (so often equal)."""
    first = draw(requests())
    how = draw(st.sampled_from(["fresh", "one field", "same bytes"]))
    if how == "fresh":
        return first, draw(requests())
    if how == "one field" or not first["inputs"]:
        field = draw(st.sampled_from(sorted(first)))
        return first, dict(first, **{field: draw(requests())[field]})
    # one input's bytes seen under another shape or datatype of the same element size
    name = draw(st.sampled_from(sorted(first["inputs"])))
    array = first["inputs"][name]
    if array.dtype != np.object_ and draw(st.booleans()):
        views = {np.dtype(d) for d in (np.uint8, np.int8, np.bool_)}
        if array.dtype.itemsize == 2:
            views = {np.dtype(np.float16), np.dtype(np.int16), np.dtype(np.uint16)}
        if array.dtype != np.bool_:
            views.discard(np.dtype(np.bool_))  # bool holds only 0 and 1
        array = array.view(draw(st.sampled_from(sorted(views, key=str))))
    else:
        shapes = [(array.size,), (1, array.size), (array.size, 1)] + (
            [()] if array.size == 1 else []
        )
        array = array.reshape(draw(st.sampled_from(shapes)))
    return first, dict(first, inputs={**first["inputs"], name: array})


@settings(max_examples=500, deadline=None)
@given(request_pairs())
def test_two_requests_share_a_key_exactly_when_they_mean_the_same(pair: tuple[dict, dict]) -> None:
    first, second = pair
    same_meaning = canonical(first) == canonical(second)
    event(f"same meaning: {same_meaning}")
    assert (request_key(**first) == request_key(**second)) == same_meaning


@settings(max_examples=200, deadline=None)
@given(requests(), st.randoms(use_true_random=False), st.text(max_size=8))
def test_order_request_id_and_transport_parameters_leave_the_key_alone(
    request: dict, random, request_id: str
) -> None:
    shuffled_inputs = list(request["inputs"].items())
    random.shuffle(shuffled_inputs)
    shuffled_outputs = list(request["outputs"])
    random.shuffle(shuffled_outputs)
    parameters = dict(request["parameters"])
    parameters.update(cache=False, timeout=5_000, priority=1, triton_enable_empty_final=True)
    if request_id:
        parameters["triton_request_id"] = request_id
    variant = dict(
        request,
        inputs=dict(shuffled_inputs),
        outputs=tuple(shuffled_outputs),
        parameters=dict(reversed(list(parameters.items()))),
    )
    assert request_key(**variant) == request_key(**request)


@settings(max_examples=200, deadline=None)
@given(requests(), st.data())
def test_changing_any_single_byte_of_an_input_changes_the_key(request: dict, data) -> None:
    numeric = {n: a for n, a in request["inputs"].items() if a.dtype != np.object_ and a.nbytes}
    if not numeric:
        return
    name = data.draw(st.sampled_from(sorted(numeric)))
    raw = bytearray(numeric[name].tobytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= 1 if numeric[name].dtype == np.bool_ else data.draw(st.integers(1, 255))
    changed = np.frombuffer(bytes(raw), dtype=numeric[name].dtype).reshape(numeric[name].shape)
    variant = dict(request, inputs={**request["inputs"], name: changed})
    assert request_key(**variant) != request_key(**request)


def test_same_bytes_under_another_datatype_or_shape_is_another_key() -> None:
    raw = np.arange(8, dtype=np.uint8)
    base = {"model": "m", "model_digest": "d"}
    keys = {
        request_key(**base, inputs={"x": raw}),
        request_key(**base, inputs={"x": raw.view(np.int8)}),
        request_key(**base, inputs={"x": raw.view(np.float16)}),
        request_key(**base, inputs={"x": raw.view(np.int16)}),
        request_key(**base, inputs={"x": raw.reshape(2, 4)}),
        request_key(**base, inputs={"x": raw.reshape(4, 2)}),
        # bytes moved across the boundary of two inputs
        request_key(**base, inputs={"x": raw[:3], "y": raw[3:]}),
        request_key(**base, inputs={"x": raw[:4], "y": raw[4:]}),
    }
    assert len(keys) == 8


def test_key_is_32_bytes_and_canonical_for_non_contiguous_and_big_endian_arrays() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    base = {"model": "m", "model_digest": "d"}
    key = request_key(**base, inputs={"x": np.ascontiguousarray(array.T)})
    assert len(key) == 32
    assert request_key(**base, inputs={"x": array.T}) == key
    assert request_key(**base, inputs={"x": array.T.astype(">f4")}) == key


def test_model_digest_separates_a_replaced_model() -> None:
    inputs = {"x": np.ones(3, dtype=np.float32)}
    assert request_key(model="m", model_digest="aa", inputs=inputs) != request_key(
        model="m", model_digest="ab", inputs=inputs
    )


def test_parameter_of_an_unsupported_type_is_refused() -> None:
    with pytest.raises(TypeError, match="'k'"):
        request_key(model="m", model_digest="d", inputs={}, parameters={"k": [1]})  # type: ignore[dict-item]
