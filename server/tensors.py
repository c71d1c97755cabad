"""The one description of a tensor: a model's input or output, as the server, warmup, the optimizer
and the benchmark all see it.

Datatypes are the Open Inference Protocol's (``FP32``, ``INT64``, ...), as ModelMetadata reports
them; ``dtype`` gives the numpy dtype. Shapes hold -1 where a dimension is variable (symbolic or
unknown in the ONNX graph); a variable first dimension is the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorgate.codec.tensors import dtype_of

#: ONNX Runtime's type strings -> OIP datatypes, for every type ONNX Runtime takes through numpy.
#: The only table of ONNX types: numpy dtypes follow from the OIP datatype.
ONNX_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` holds -1 where a dimension is variable."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_ort(cls, node: Any) -> TensorSpec:
        """From an ``onnxruntime.NodeArg``; symbolic or unknown dimensions become -1."""
        datatype = ONNX_TO_DATATYPE.get(node.type)
        if datatype is None:
            raise ValueError(
                f"tensor '{node.name}' has type {node.type}, which tensorgate cannot serve"
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in node.shape)
        return cls(name=node.name, datatype=datatype, shape=shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of this tensor's elements (``object`` for BYTES)."""
        return dtype_of(self.datatype, self.name)

    @property
    def has_dynamic_batch(self) -> bool:
        """True when the first dimension is variable, so any batch size fits."""
        return len(self.shape) > 0 and self.shape[0] == DYNAMIC

    @property
    def is_float(self) -> bool:
        return bool(np.issubdtype(self.dtype, np.floating))


def session_specs(session: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``(inputs, outputs)`` of an ``onnxruntime.InferenceSession``."""

    def convert(nodes: Sequence[Any]) -> list[TensorSpec]:
        return [TensorSpec.from_ort(node) for node in nodes]

    return convert(session.get_inputs()), convert(session.get_outputs())
