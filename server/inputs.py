"""A model's tensor specs, and the inputs fed to it: random ones, or ones read from a file.

A *feed* is a ``dict`` of input name to array, every array with the same number of rows (axis 0).
Dimensions that are not fixed (``-1``, ``None`` or a symbolic name) are *dynamic*: a dynamic first
dimension is the batch; any other dynamic dimension is given the size 1 in random inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from tensorgate.codec.tensors import dtype_of
from tensorgate.server.errors import TensorgateError

Feed = dict[str, np.ndarray]

#: ONNX Runtime's type strings and the numpy dtypes they hold.
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

#: Random integer inputs are drawn from [0, this): small enough to be a valid index or class id.
RANDOM_INT_HIGH = 10


class InputError(TensorgateError):
    """Inputs that cannot be made or read as asked: a missing file, a wrong shape, an unknown type."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "inputs"


class TensorSpecLike(Protocol):
    """Anything with a tensor's name, shape (ints, or -1/None/str when dynamic) and type: a numpy
    ``dtype`` or an Open Inference Protocol ``datatype`` such as ``FP32``."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None]: ...


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: ``shape`` holds ``None`` for each dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @classmethod
    def of(cls, spec: TensorSpecLike) -> TensorSpec:
        """Normalises any spec-like object (``-1`` and symbolic names become ``None``)."""
        if hasattr(spec, "dtype"):
            dtype = np.dtype(spec.dtype)
        else:
            dtype = dtype_of(spec.datatype, spec.name)  # type: ignore[attr-defined]
        return cls(spec.name, dtype, tuple(_dim(d) for d in spec.shape))

    @property
    def batched(self) -> bool:
        """True when the first dimension is dynamic, so any batch size fits."""
        return bool(self.shape) and self.shape[0] is None

    @property
    def is_float(self) -> bool:
        return np.issubdtype(self.dtype, np.floating)


def _dim(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) and dim >= 0 else None


def numpy_dtype(ort_type: str) -> np.dtype:
    """The numpy dtype of an ONNX Runtime type string such as ``tensor(float)``."""
    try:
        return _ORT_DTYPES[ort_type]
    except KeyError:
        raise InputError(f"unsupported tensor type {ort_type}") from None


def session_specs(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``(inputs, outputs)`` of an ``onnxruntime.InferenceSession``."""

    def convert(args: Sequence[Any]) -> list[TensorSpec]:
        return [
            TensorSpec(a.name, numpy_dtype(a.type), tuple(_dim(d) for d in a.shape)) for a in args
        ]

    return convert(session.get_inputs()), convert(session.get_outputs())


def batch_size_for(specs: Sequence[TensorSpec], requested: int) -> int:
    """``requested`` when every batched input takes any batch, else the model's fixed first dim."""
    for spec in specs:
        if spec.shape and not spec.batched:
            return int(spec.shape[0] or 1)
    return requested


def concrete_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    """The shape of ``batch`` rows: the batch in a dynamic first dim, 1 in other dynamic dims."""
    dims = [d if d is not None else 1 for d in spec.shape]
    if spec.batched:
        dims[0] = batch
    return tuple(dims)


def can_randomize(spec: TensorSpec) -> bool:
    """True for the numeric and boolean tensors ``random_feed`` can make up."""
    return spec.dtype == np.bool_ or np.issubdtype(spec.dtype, np.number)


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
            raise InputError(f"cannot make random inputs for {spec.name} of type {spec.dtype}")
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
        if want is not None and want != have and not (axis == 0 and spec.batched):
            raise InputError(
                f"{path}: input {spec.name} needs shape {spec.shape}, got {array.shape}"
            )
    if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise InputError(f"{path}: input {spec.name} is {spec.dtype}, the file holds {array.dtype}")
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
