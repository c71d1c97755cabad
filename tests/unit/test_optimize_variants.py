"""Each variant builds from a small classifier, loads in ONNX Runtime, and answers like the original
within the tolerances documented in docs/optimization.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorgate.server.tensors import TensorSpec
from tensorgate.tools.optimize.agreement import compare
from tensorgate.tools.optimize.errors import OptimizeError
from tensorgate.tools.optimize.variants import (
    ALL_VARIANTS,
    VARIANTS,
    applicable_variants,
    resolve_variants,
)

FEATURES, HIDDEN, CLASSES = 16, 64, 5
OUTPUTS = [
    TensorSpec("label", "INT64", (-1,)),
    TensorSpec("probabilities", "FP32", (-1, CLASSES)),
]
#: The documented tolerances (docs/optimization.md, "Tolerances").
GRAPH_MAX_ABS_DIFF = 1e-5
FP16_MAX_ABS_DIFF = 1e-2
INT8_TOP1_AGREEMENT = 0.95
INT8_MEAN_ABS_DIFF = 0.02


def classifier(seed: int = 0) -> onnx.ModelProto:
    """x [batch, 16] -> MatMul/Add/Relu -> MatMul/Add -> Softmax (probabilities), ArgMax (label)."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((FEATURES, HIDDEN)) / 4,
        "b1": rng.standard_normal(HIDDEN) / 10,
        "w2": rng.standard_normal((HIDDEN, CLASSES)) / 8,
        "b2": rng.standard_normal(CLASSES) / 10,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
        ],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    onnx.save(classifier(), str(path))
    return path


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((200, FEATURES)).astype(np.float32)


def answers(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["label", "probabilities"]
    return dict(zip(names, session.run(names, {"x": x}), strict=True))


def build(name: str, source: Path, tmp_path: Path, calibration: np.ndarray | None = None) -> Path:
    target = tmp_path / name / "model.onnx"
    target.parent.mkdir()
    VARIANTS[name].build(source, target, None if calibration is None else {"x": calibration})
    return target


def io_types(path: Path) -> dict[str, int]:
    graph = onnx.load(str(path)).graph
    return {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}


def test_graph_variant_is_portable_and_exact(
    source: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    target = build("graph", source, tmp_path)

    domains = {node.domain for node in onnx.load(str(target)).graph.node}
    assert domains <= {"", "ai.onnx"}, "only standard operators, so any provider can run it"
    agreed = compare(answers(source, inputs), answers(target, inputs), OUTPUTS)
    assert agreed.max_abs_diff <= GRAPH_MAX_ABS_DIFF
    assert agreed.top1_agreement == 1.0


def test_fp16_variant_keeps_float32_io_and_halves_the_weights(
    source: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    target = build("fp16", source, tmp_path)

    model = onnx.load(str(target))
    assert io_types(target) == io_types(source)
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    agreed = compare(answers(source, inputs), answers(target, inputs), OUTPUTS)
    assert agreed.max_abs_diff <= FP16_MAX_ABS_DIFF


def test_int8_variant_runs_integer_kernels(
    source: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    target = build("int8", source, tmp_path)

    ops = {node.op_type for node in onnx.load(str(target)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert io_types(target) == io_types(source)
    agreed = compare(answers(source, inputs), answers(target, inputs), OUTPUTS)
    assert agreed.top1_agreement >= INT8_TOP1_AGREEMENT
    assert agreed.mean_abs_diff <= INT8_MEAN_ABS_DIFF
    assert target.stat().st_size < source.stat().st_size


def test_int8_static_variant_is_qdq_calibrated_on_the_given_rows(
    source: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    calibration = np.random.default_rng(2).standard_normal((64, FEATURES)).astype(np.float32)
    target = build("int8-static", source, tmp_path, calibration)

    ops = {node.op_type for node in onnx.load(str(target)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    agreed = compare(answers(source, inputs), answers(target, inputs), OUTPUTS)
    assert agreed.top1_agreement >= INT8_TOP1_AGREEMENT
    assert agreed.mean_abs_diff <= INT8_MEAN_ABS_DIFF


def test_int8_static_without_calibration_is_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="--calibration"):
        build("int8-static", source, tmp_path)


def test_default_variants_are_those_that_apply() -> None:
    model = classifier()
    assert applicable_variants(model, has_calibration=False) == ["graph", "fp16", "int8"]
    assert applicable_variants(model, has_calibration=True) == list(ALL_VARIANTS)

    no_matmul = onnx.ModelProto()
    no_matmul.CopyFrom(model)
    del no_matmul.graph.node[:]
    no_matmul.graph.node.append(helper.make_node("Identity", ["x"], ["probabilities"]))
    assert applicable_variants(no_matmul, has_calibration=True) == ["graph", "fp16"]


def test_requested_variants_are_checked() -> None:
    default = ["graph", "int8"]
    assert resolve_variants(None, default, has_calibration=False) == default
    assert resolve_variants(["int8", "graph", "int8"], default, False) == ["int8", "graph"]
    with pytest.raises(OptimizeError, match=r"unknown variant.*int4"):
        resolve_variants(["int4"], default, False)
    with pytest.raises(OptimizeError, match="--calibration"):
        resolve_variants(["int8-static"], default, has_calibration=False)


def test_int8_builds_when_the_exporter_recorded_the_shapes_of_transposed_gemm_weights(
    tmp_path: Path,
) -> None:
    """PyTorch's default exporter writes value_info for weights; the quantizer transposes a Gemm
    weight (transB) without updating it, which used to fail shape inference on the int8 model."""
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((CLASSES, FEATURES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["logits"], transB=1)],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(weight, "w")],
        value_info=[helper.make_tensor_value_info("w", TensorProto.FLOAT, [CLASSES, FEATURES])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source, target = tmp_path / "model.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(source))
    VARIANTS["int8"].build(source, target)
    x = rng.standard_normal((4, FEATURES)).astype(np.float32)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": x})
    assert np.abs(logits - x @ weight.T).max() < 0.1 * np.abs(x @ weight.T).max()
