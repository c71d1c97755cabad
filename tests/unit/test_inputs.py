"""The one tensor spec, random inputs and inputs read from .npy/.npz files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tensorgate.server.inputs import (
    InputError,
    batch_size_for,
    chunks,
    load_feed,
    random_feed,
    take_rows,
)
from tensorgate.server.tensors import TensorSpec

PIXELS = TensorSpec("pixels", "FP32", (-1, 64))
TOKENS = TensorSpec("tokens", "INT64", (-1, -1))
MASK = TensorSpec("mask", "BOOL", (-1, 3))


def test_a_spec_from_onnx_runtime_has_oip_datatype_variable_dims_and_numpy_dtype() -> None:
    node = SimpleNamespace(name="y", type="tensor(float16)", shape=["batch", None, 2])

    spec = TensorSpec.from_ort(node)

    assert spec == TensorSpec("y", "FP16", (-1, -1, 2))
    assert spec.dtype == np.float16 and spec.is_float and spec.has_dynamic_batch
    assert not TensorSpec("ids", "INT64", (4, 3)).has_dynamic_batch


def test_an_onnx_type_tensorgate_cannot_serve_is_named() -> None:
    node = SimpleNamespace(name="seq", type="seq(tensor(float))", shape=[])
    with pytest.raises(ValueError, match=r"tensor 'seq' has type seq\(tensor\(float\)\)"):
        TensorSpec.from_ort(node)


def test_random_inputs_have_the_right_shape_dtype_and_range() -> None:
    feed = random_feed([PIXELS, TOKENS, MASK], 5, np.random.default_rng(0))

    assert feed["pixels"].shape == (5, 64) and feed["pixels"].dtype == np.float32
    assert feed["pixels"].min() >= 0 and feed["pixels"].max() < 1
    assert feed["tokens"].shape == (5, 1) and feed["tokens"].dtype == np.int64
    assert feed["mask"].shape == (5, 3) and feed["mask"].dtype == np.bool_


def test_a_fixed_first_dimension_sets_the_batch() -> None:
    fixed = TensorSpec("image", "FP32", (4, 3))

    assert batch_size_for([PIXELS], 32) == 32
    assert batch_size_for([fixed], 32) == 4
    assert random_feed([fixed], batch_size_for([fixed], 32), np.random.default_rng(0))[
        "image"
    ].shape == (4, 3)


def test_strings_cannot_be_made_up() -> None:
    text = TensorSpec("text", "BYTES", (-1,))
    with pytest.raises(InputError, match="cannot make random inputs for text"):
        random_feed([text], 2, np.random.default_rng(0))


def test_npy_feeds_the_only_input_cast_to_its_dtype(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.arange(128, dtype=np.float64).reshape(2, 64))

    feed = load_feed(path, [PIXELS])

    assert feed["pixels"].dtype == np.float32 and feed["pixels"].shape == (2, 64)


def test_npz_feeds_inputs_by_name(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, pixels=np.zeros((3, 64), np.float32), tokens=np.ones((3, 7), np.int64))

    feed = load_feed(path, [PIXELS, TOKENS])

    assert feed["tokens"].shape == (3, 7)


@pytest.mark.parametrize(
    ("arrays", "specs", "message"),
    [
        ({"x.npy": np.zeros((2, 63), np.float32)}, [PIXELS], r"needs shape \[-1, 64\]"),
        ({"x.npy": np.zeros((64,), np.float32)}, [PIXELS], "needs rank 2"),
        ({"x.npy": np.zeros((2, 64), np.float32)}, [PIXELS, TOKENS], "give an .npz"),
        ({"x.npy": np.zeros((2, 64), np.complex64)}, [PIXELS], "the file holds complex64"),
        ({"x.npz": {"pixels": np.zeros((2, 64), np.float32)}}, [PIXELS, TOKENS], "tokens"),
        (
            {"x.npz": {"pixels": np.zeros((2, 64)), "tokens": np.zeros((3, 1), np.int64)}},
            [PIXELS, TOKENS],
            "disagree on their number of rows",
        ),
    ],
)
def test_ill_fitting_files_are_refused(
    tmp_path: Path, arrays: dict, specs: list[TensorSpec], message: str
) -> None:
    ((name, content),) = arrays.items()
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, **content)
    else:
        np.save(path, content)

    with pytest.raises(InputError, match=message):
        load_feed(path, specs)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_feed(tmp_path / "absent.npy", [PIXELS])


def test_take_rows_repeats_a_short_feed_and_chunks_cover_it() -> None:
    feed = {"x": np.arange(3)}

    assert take_rows(feed, 7)["x"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert [c["x"].tolist() for c in chunks({"x": np.arange(5)}, 2)] == [[0, 1], [2, 3], [4]]
