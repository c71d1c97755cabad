"""Small ONNX models built in tests: every datatype, a model that fails at run time, a fixed batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]

#: OIP datatype -> ONNX element type, for every datatype the server serves
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def save(
    model: onnx.ModelProto, repository: Path, name: str, version: int = 1, config: str | None = None
) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = repository / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    if config is not None:
        (repository / name / "config.toml").write_text(config)
    return path


def all_types_model() -> onnx.ModelProto:
    """in_<TYPE> -> Identity -> out_<TYPE>, shape [-1, 3], for every datatype."""
    nodes, inputs, outputs = [], [], []
    for datatype, elem in ONNX_TYPES.items():
        lower = datatype.lower()
        inputs.append(helper.make_tensor_value_info(f"in_{lower}", elem, ["batch", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{lower}", elem, ["batch", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{lower}"], [f"out_{lower}"]))
    graph = helper.make_graph(nodes, "all_types", inputs, outputs)
    return helper.make_model(graph, opset_imports=OPSET, producer_name="tensorgate-tests")


def failing_model() -> onnx.ModelProto:
    """x FP32 [-1, 4] reshaped to [5]: valid for the server's checks, fails inside ONNX Runtime."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [5])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "failing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        initializer=[shape],
    )
    return helper.make_model(graph, opset_imports=OPSET, producer_name="tensorgate-tests")


def add_one_model(increment: float = 1.0) -> onnx.ModelProto:
    """x FP32 [-1, 4] -> x + increment: tells versions apart."""
    one = helper.make_tensor("inc", TensorProto.FLOAT, [1], [increment])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "inc"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[one],
    )
    return helper.make_model(graph, opset_imports=OPSET, producer_name="tensorgate-tests")


def make_test_repository(root: Path, examples: Path | None = None) -> Path:
    """A repository with the test models, plus copies of the example models when given."""
    root.mkdir(parents=True, exist_ok=True)
    save(all_types_model(), root, "all_types")
    save(failing_model(), root, "failing", config="[warmup]\ncount = 0\n")
    save(add_one_model(1.0), root, "add", version=1)
    save(add_one_model(2.0), root, "add", version=2)
    if examples is not None:
        for name in ("digits",):
            shutil.copytree(examples / name, root / name)
    return root
