"""Tensor descriptions of a served model: names, OIP datatypes and shapes read from the ONNX graph."""

from __future__ import annotations

from dataclasses import dataclass

# ONNX Runtime's type strings -> OIP datatypes, for every type ONNX Runtime takes through numpy.
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
    def from_ort(cls, node: object) -> TensorSpec:
        """From an ``onnxruntime.NodeArg``; symbolic or unknown dimensions become -1."""
        onnx_type: str = node.type  # type: ignore[attr-defined]
        datatype = ONNX_TO_DATATYPE.get(onnx_type)
        if datatype is None:
            raise ValueError(
                f"tensor '{node.name}' has type {onnx_type}, which tensorgate cannot serve"
            )  # type: ignore[attr-defined]
        shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in node.shape)  # type: ignore[attr-defined]
        return cls(name=node.name, datatype=datatype, shape=shape)  # type: ignore[attr-defined]

    @property
    def has_dynamic_batch(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] == DYNAMIC
