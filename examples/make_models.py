"""Builds the example model repository, ``examples/models/``, from scratch. It downloads nothing.

    python -m tensorgate.examples.make_models [--out DIR] [--bench]

Writes ``<out>/<name>/1/model.onnx`` and ``<out>/<name>/config.toml`` for:

- ``digits``: a multinomial logistic regression trained with scikit-learn on its bundled
  handwritten digits (``tensorgate.examples.datasets.digits_split``). Input ``pixels`` FP32
  [-1, 64] holds the raw pixel values 0..16; the standardization is inside the graph. Outputs
  ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, 10].
- ``cnn``: a compute-bound convolutional network with seeded-random weights, input ``image`` FP32
  [-1, 3, 32, 32], output ``logits`` FP32 [-1, 10]; it exists to load the server.
- ``mlp``: 256 -> 1024 -> 1024 -> 16 with ReLU, seeded weights, input ``x`` FP32 [-1, 256],
  output ``y`` FP32 [-1, 16]; overhead-free, large enough to show what int8 quantization is worth.

The output is byte-for-byte reproducible: fixed seeds, no timestamps, no version strings, and the
trained weights are rounded to a grid far coarser than any floating-point noise between machines.
``tests/unit/test_example_models.py`` regenerates the models and fails when the committed files
drift from this script.

Dense layers are ``MatMul`` + ``Add`` rather than ``Gemm``: ONNX Runtime fuses them into one Gemm
at load time anyway, and its dynamic int8 quantization handles ``MatMul`` but not ``Gemm``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
#: IR 8 is the version that introduced opset 17; every ONNX Runtime since 1.12 loads it.
IR_VERSION = 8
PRODUCER = "tensorgate"
BATCH = "batch"

DEFAULT_OUT = Path(__file__).resolve().parent / "models"

#: Rounding applied to trained weights so that BLAS noise (~1e-14) cannot change a single bit.
TRAINED_DECIMALS = 5

DIGITS_C = 0.1
CNN_SEED = 20240601
MLP_SEED = 20240602

#: cnn: (out_channels, pool after?) per 3x3 convolution; tuned for ~2-3 ms at batch 1 on 2 cores.
CNN_LAYERS: tuple[tuple[int, bool], ...] = (
    (96, False),
    (96, False),
    (96, False),
    (96, False),
    (96, True),
    (128, True),
    (128, True),
)
MLP_SIZES = (256, 1024, 1024, 16)

CONFIGS = {
    "digits": """\
# The scikit-learn digits classifier. Inputs and outputs are read from the graph.
max_batch_size = 64
""",
    "cnn": """\
# A compute-bound image model (seeded-random weights): the one that shows batching's worth.
max_batch_size = 32

[warmup]
batch_sizes = [1, 32]
""",
    "mlp": """\
# An overhead-free 256-1024-1024-16 MLP: the one that shows int8 quantization's worth.
max_batch_size = 64
""",
}


# --------------------------------------------------------------------------- graph helpers


class _Graph:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs) -> str:
        self._count += 1
        out = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}", **attrs)
        )
        return out

    def dense(self, x: str, name: str, w: np.ndarray, b: np.ndarray, output: str | None = None):
        y = self.op("MatMul", [x, self.const(f"{name}.weight", w.astype(np.float32))])
        return self.op("Add", [y, self.const(f"{name}.bias", b.astype(np.float32))], output)

    def model(
        self,
        name: str,
        doc: str,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, list(inputs), list(outputs), self.initializers, doc_string=doc
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def _tensor(name: str, elem_type: int, *dims: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [BATCH, *dims])


# --------------------------------------------------------------------------- models


def build_digits() -> onnx.ModelProto:
    """Standardize -> MatMul+Add -> Softmax -> probabilities; ArgMax(probabilities) -> label."""
    from sklearn.linear_model import LogisticRegression

    from tensorgate.examples.datasets import digits_split

    x_train, _, y_train, _ = digits_split()
    x64 = x_train.astype(np.float64)
    mean = np.round(x64.mean(axis=0), TRAINED_DECIMALS)
    std = np.round(x64.std(axis=0), TRAINED_DECIMALS)
    std[std == 0] = 1.0  # always-blank corner pixels
    clf = LogisticRegression(C=DIGITS_C, solver="newton-cg", tol=1e-12, max_iter=10_000)
    clf.fit((x64 - mean) / std, y_train)
    weight = np.round(clf.coef_.T, TRAINED_DECIMALS)  # [64, 10]
    bias = np.round(clf.intercept_, TRAINED_DECIMALS)

    g = _Graph()
    scaled = g.op("Sub", ["pixels", g.const("scaler.mean", mean.astype(np.float32))])
    scaled = g.op("Div", [scaled, g.const("scaler.std", std.astype(np.float32))])
    logits = g.dense(scaled, "classifier", weight, bias, "logits")
    g.op("Softmax", [logits], "probabilities", axis=-1)
    g.op("ArgMax", ["probabilities"], "label", axis=1, keepdims=0)
    return g.model(
        "digits",
        "Logistic regression on scikit-learn's digits; input raw 8x8 pixels 0..16.",
        [_tensor("pixels", TensorProto.FLOAT, 64)],
        [_tensor("label", TensorProto.INT64), _tensor("probabilities", TensorProto.FLOAT, 10)],
    )


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def build_cnn() -> onnx.ModelProto:
    """[3x3 Conv + Relu (+ MaxPool 2x2)] x len(CNN_LAYERS) -> Flatten -> MatMul+Add -> logits."""
    rng = np.random.default_rng(CNN_SEED)
    g = _Graph()
    x, channels, side = "image", 3, 32
    for i, (out_channels, pool) in enumerate(CNN_LAYERS, start=1):
        w = _he(rng, (out_channels, channels, 3, 3), channels * 9)
        b = np.zeros(out_channels, np.float32)
        x = g.op(
            "Conv",
            [x, g.const(f"conv{i}.weight", w), g.const(f"conv{i}.bias", b)],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        )
        x = g.op("Relu", [x])
        if pool:
            x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            side //= 2
        channels = out_channels
    x = g.op("Flatten", [x], axis=1)
    features = channels * side * side
    w = _he(rng, (features, 10), features)
    g.dense(x, "fc", w, np.zeros(10, np.float32), "logits")
    return g.model(
        "cnn",
        "Seeded-random convolutional network; compute-bound load for the server.",
        [_tensor("image", TensorProto.FLOAT, 3, 32, 32)],
        [_tensor("logits", TensorProto.FLOAT, 10)],
    )


def build_mlp() -> onnx.ModelProto:
    """256 -> 1024 -> 1024 -> 16, ReLU between layers, seeded weights."""
    rng = np.random.default_rng(MLP_SEED)
    g = _Graph()
    x = "x"
    layers = list(itertools.pairwise(MLP_SIZES))
    for i, (fan_in, fan_out) in enumerate(layers, start=1):
        w = _he(rng, (fan_in, fan_out), fan_in)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        last = i == len(layers)
        x = g.dense(x, f"fc{i}", w, b, "y" if last else None)
        if not last:
            x = g.op("Relu", [x])
    return g.model(
        "mlp",
        "Seeded-random 256-1024-1024-16 MLP; shows what int8 quantization is worth.",
        [_tensor("x", TensorProto.FLOAT, MLP_SIZES[0])],
        [_tensor("y", TensorProto.FLOAT, MLP_SIZES[-1])],
    )


BUILDERS = {"digits": build_digits, "cnn": build_cnn, "mlp": build_mlp}


# --------------------------------------------------------------------------- writing


def parameter_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(init.dims)) for init in model.graph.initializer)


def write_models(out: Path, names: Sequence[str] = tuple(BUILDERS)) -> dict[str, Path]:
    """Builds and writes each named model and its config.toml; returns the model paths."""
    paths = {}
    for name in names:
        model = BUILDERS[name]()
        model_dir = out / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        path = model_dir / "1" / "model.onnx"
        path.write_bytes(model.SerializeToString(deterministic=True))
        (model_dir / "config.toml").write_text(CONFIGS[name], encoding="utf-8")
        paths[name] = path
    return paths


def digits_accuracy(path: Path) -> float:
    """Held-out accuracy of the ONNX model itself, run through ONNX Runtime."""
    import onnxruntime as ort

    from tensorgate.examples.datasets import digits_split

    _, x_test, _, y_test = digits_split()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (label,) = session.run(["label"], {"pixels": x_test})
    return float(np.mean(label == y_test))


def benchmark(path: Path, input_name: str, shape: tuple[int, ...], runs: int = 200) -> dict:
    """Median batch-1 latency (ms) and batch-32 throughput (items/s), default session options."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    result = {}
    for batch in (1, 32):
        feed = {input_name: rng.standard_normal((batch, *shape)).astype(np.float32)}
        for _ in range(10):
            session.run(None, feed)
        times = []
        for _ in range(runs if batch == 1 else max(runs // 4, 20)):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        result[batch] = (median * 1e3, batch / median)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tensorgate.examples.make_models")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model repository to write")
    parser.add_argument(
        "--bench", action="store_true", help="also time cnn and mlp on this machine's CPU"
    )
    args = parser.parse_args(argv)

    paths = write_models(args.out)
    for name, path in paths.items():
        model = onnx.load(str(path))
        print(
            f"{name:7s} {path}  {path.stat().st_size / 1e6:.2f} MB  "
            f"{parameter_count(model):,} parameters"
        )
    print(f"digits held-out accuracy (ONNX Runtime): {digits_accuracy(paths['digits']):.4f}")
    if args.bench:
        for name, input_name, shape in (("cnn", "image", (3, 32, 32)), ("mlp", "x", (256,))):
            figures = benchmark(paths[name], input_name, shape)
            (lat1, _), (lat32, tput32) = figures[1], figures[32]
            print(
                f"{name}: batch 1 median {lat1:.2f} ms ({1e3 / lat1:.0f}/s); "
                f"batch 32 median {lat32:.2f} ms, {tput32:.0f} items/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
