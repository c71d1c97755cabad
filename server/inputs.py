"""The inputs fed to a model: random ones, ones read from a file, and slices of them.

Warmup, the optimizer and the benchmark all make their inputs here, from the one ``TensorSpec``.
A *feed* is a ``dict`` of input name to array, every array with the same number of rows (axis 0).
A variable first dimension (-1) is the batch; any other variable dimension is given the size 1 in
random inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np

from tensorgate.server.errors import TensorgateError
from tensorgate.server.tensors import DYNAMIC, TensorSpec

Feed = dict[str, np.ndarray]

#: Random integer inputs are drawn from [0, this): small enough to be a valid index or class id.
RANDOM_INT_HIGH = 10


class InputError(TensorgateError):
    """Inputs that cannot be made or read as asked: a missing file, the wrong shape or type."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "inputs"


def batch_size_for(specs: Sequence[TensorSpec], requested: int) -> int:
    """``requested`` when every batched input takes any batch, else the model's fixed first dim."""
    for spec in specs:
        if spec.shape and not spec.has_dynamic_batch:
            return int(spec.shape[0])
    return requested


def concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """The shape of ``batch`` rows: the batch in a variable first dim, 1 in other variable dims."""
    dims = [d if d != DYNAMIC else 1 for d in spec.shape]
    if spec.has_dynamic_batch:
        dims[0] = batch
    return tuple(dims)


def can_randomize(spec: TensorSpec) -> bool:
    """True for the numeric and boolean tensors ``random_feed`` can make up."""
    return spec.dtype == np.bool_ or bool(np.issubdtype(spec.dtype, np.number))


def random_feed(specs: Sequence[TensorSpec], batch: int, rng: np.random.Generator) -> Feed:
    """Random inputs of the right shape and dtype: floats uniform in [0, 1), ints in [0, 10)."""
    feed: Feed = {}
    for spec in specs:
        shape = concrete_shape(spec, batch)
        if spec.is_float:
            feed[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feed[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(spec.dtype, np.integer):
            feed[spec.name] = rng.integers(0, RANDOM_INT_HIGH, shape).astype(spec.dtype)
        else:
            raise InputError(f"cannot make random inputs for {spec.name} of type {spec.datatype}")
    return feed


def load_feed(path: Path, specs: Sequence[TensorSpec]) -> Feed:
    """Reads inputs from ``.npy`` (the model's only input) or ``.npz`` (one array per input name).

    Arrays are cast to the input's dtype and must have its rank and the same number of rows.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [s.name for s in specs if s.name not in archive.files]
            if missing:
                raise InputError(f"{path}: no array for input(s) {', '.join(missing)}")
            arrays = {s.name: archive[s.name] for s in specs}
    else:
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise InputError(f"{path}: the model has several inputs ({names}); give an .npz")
        arrays = {specs[0].name: np.load(path, allow_pickle=False)}
    feed = {s.name: _conform(path, s, arrays[s.name]) for s in specs}
    rows(feed)
    return feed


def _conform(path: Path, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    if array.ndim != len(spec.shape):
        raise InputError(
            f"{path}: input {spec.name} needs rank {len(spec.shape)}, the file has {array.shape}"
        )
    for axis, (want, have) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want != DYNAMIC and want != have and not (axis == 0 and spec.has_dynamic_batch):
            raise InputError(
                f"{path}: input {spec.name} needs shape {list(spec.shape)}, got {array.shape}"
            )
    if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise InputError(
            f"{path}: input {spec.name} is {spec.datatype}, the file holds {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=spec.dtype)


def rows(feed: Mapping[str, np.ndarray]) -> int:
    """The number of rows of a feed; every array must agree."""
    counts = {len(a) if a.ndim else 1 for a in feed.values()}
    if len(counts) != 1:
        raise InputError(f"inputs disagree on their number of rows: {sorted(counts)}")
    return counts.pop()


def take_rows(feed: Mapping[str, np.ndarray], count: int) -> Feed:
    """The first ``count`` rows, repeating the feed when it has fewer (scalars are kept whole)."""
    index = np.arange(count) % rows(feed)
    return {name: np.ascontiguousarray(a[index]) if a.ndim else a for name, a in feed.items()}


def chunks(feed: Mapping[str, np.ndarray], size: int) -> Iterator[Feed]:
    """Consecutive slices of at most ``size`` rows."""
    total = rows(feed)
    for start in range(0, total, size):
        yield {name: a[start : start + size] if a.ndim else a for name, a in feed.items()}
