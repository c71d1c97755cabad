"""The variant builders: each reads the original ``model.onnx`` and writes one optimized copy.

- ``graph``: ONNX Runtime's *basic* graph optimizations (constant folding, redundant node removal,
  semantics-preserving fusions), saved offline. Basic rewrites run before graph partitioning and
  emit only standard ONNX operators, so the file runs on any machine and execution provider; the
  extended and layout levels emit provider- and CPU-specific operators (see docs/optimization.md).
- ``fp16``: float16 weights and compute with float32 inputs and outputs kept; meant for GPUs.
- ``int8``: dynamic quantization, int8 weights per output channel, uint8 activations quantized
  at run time (the u8s8 kernels of x86 VNNI/AMX and of ARM).
- ``int8-static``: static QDQ quantization, uint8 activations with ranges calibrated on
  ``--calibration`` rows, int8 weights per channel.

Both quantizers first run ONNX Runtime's ``quant_pre_process`` (shape inference and basic
optimization), as its tools recommend.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort

from tensorgate.server.inputs import Feed
from tensorgate.tools.optimize.errors import OptimizeError

logger = logging.getLogger(__name__)

GRAPH, FP16, INT8, INT8_STATIC = "graph", "fp16", "int8", "int8-static"
ALL_VARIANTS: tuple[str, ...] = (GRAPH, FP16, INT8, INT8_STATIC)

#: The operators whose presence makes quantization worth trying (ONNX Runtime's integer kernels).
QUANTIZABLE_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU"})

Builder = Callable[[Path, Path, Feed | None], None]


@dataclass(frozen=True)
class Variant:
    """A named way of building a cheaper model; ``needs_calibration`` for static quantization."""

    name: str
    build: Builder
    needs_calibration: bool = False


def build_graph(source: Path, target: Path, calibration: Feed | None = None) -> None:
    """Saves the model after ONNX Runtime's basic (portable) graph optimizations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def build_fp16(source: Path, target: Path, calibration: Feed | None = None) -> None:
    """Converts weights and compute to float16, keeping float32 inputs and outputs."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    if caught:
        logger.info("fp16: %d values clamped or truncated to fit float16", len(caught))
    onnx.save(converted, str(target))


def build_int8(source: Path, target: Path, calibration: Feed | None = None) -> None:
    """Dynamic quantization: int8 weights per channel, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _preprocessed(source) as prepared:
        quantize_dynamic(prepared, target, weight_type=QuantType.QInt8, per_channel=True)


def build_int8_static(source: Path, target: Path, calibration: Feed | None = None) -> None:
    """Static QDQ quantization with activation ranges calibrated on ``calibration`` (min/max)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from tensorgate.tools.optimize.calibration import FeedCalibrationReader

    if calibration is None:
        raise OptimizeError("int8-static needs calibration inputs (--calibration FILE.npy)")
    with _preprocessed(source) as prepared:
        quantize_static(
            prepared,
            target,
            FeedCalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def without_weight_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without ``value_info`` entries for its initializers.

    PyTorch's default (dynamo) exporter records the shapes of the weights; ONNX Runtime's quantizer
    transposes a ``Gemm`` weight without updating them, and shape inference then fails on the
    quantized model. The shapes of initializers are known from the initializers themselves.
    """
    weights = {initializer.name for initializer in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


@contextmanager
def _preprocessed(source: Path) -> Iterator[Path]:
    """A temporary copy of the model after ``quant_pre_process``, removed afterwards."""
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="tensorgate-quant-") as folder:
        cleaned, prepared = Path(folder) / "source.onnx", Path(folder) / "prepared.onnx"
        onnx.save(without_weight_shapes(onnx.load(str(source))), str(cleaned))
        # Symbolic shape inference would need sympy; ONNX shape inference suffices for these ops.
        quant_pre_process(str(cleaned), str(prepared), skip_symbolic_shape=True)
        yield prepared


VARIANTS: dict[str, Variant] = {
    GRAPH: Variant(GRAPH, build_graph),
    FP16: Variant(FP16, build_fp16),
    INT8: Variant(INT8, build_int8),
    INT8_STATIC: Variant(INT8_STATIC, build_int8_static, needs_calibration=True),
}


def applicable_variants(model: onnx.ModelProto, has_calibration: bool) -> list[str]:
    """The default set: ``graph`` always; ``fp16`` with float32 tensors; ``int8`` with quantizable
    operators; ``int8-static`` also when calibration inputs are given."""
    graph = model.graph
    floats = any(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in graph.input
    )
    quantizable = any(node.op_type in QUANTIZABLE_OPS for node in graph.node)
    names = [GRAPH]
    if floats:
        names.append(FP16)
    if quantizable:
        names.append(INT8)
        if has_calibration:
            names.append(INT8_STATIC)
    return names


def resolve_variants(
    requested: Sequence[str] | None, default: Sequence[str], has_calibration: bool
) -> list[str]:
    """The variants to build: those asked for (checked), or the applicable default set."""
    if requested is None:
        return list(default)
    unknown = [name for name in requested if name not in VARIANTS]
    if unknown:
        raise OptimizeError(
            f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}"
        )
    if not has_calibration and any(VARIANTS[name].needs_calibration for name in requested):
        raise OptimizeError("int8-static needs calibration inputs (--calibration FILE.npy)")
    return list(dict.fromkeys(requested))
