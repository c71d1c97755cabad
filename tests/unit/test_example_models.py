"""The committed example models: their interfaces, digits' accuracy, and that they match the script.

If ``test_committed_models_match_the_script`` fails, the script and the committed files have
drifted: run ``python -m tensorgate.examples.make_models`` and commit ``examples/models/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from tensorgate.examples import make_models  # noqa: E402
from tensorgate.examples.datasets import digits_split  # noqa: E402
from tensorgate.server.model_config import load_model_config  # noqa: E402

REPO = Path(make_models.__file__).resolve().parent / "models"

# name -> (inputs, outputs), each {tensor name: (ONNX Runtime type, non-batch dims)}
INTERFACES = {
    "digits": (
        {"pixels": ("tensor(float)", [64])},
        {"label": ("tensor(int64)", []), "probabilities": ("tensor(float)", [10])},
    ),
    "cnn": (
        {"image": ("tensor(float)", [3, 32, 32])},
        {"logits": ("tensor(float)", [10])},
    ),
    "mlp": (
        {"x": ("tensor(float)", [256])},
        {"y": ("tensor(float)", [16])},
    ),
}


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(REPO / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def test_every_built_model_is_committed():
    assert set(INTERFACES) == set(make_models.BUILDERS)
    for name in INTERFACES:
        assert (REPO / name / "1" / "model.onnx").is_file(), name
        assert (REPO / name / "config.toml").is_file(), name


@pytest.mark.parametrize("name", sorted(INTERFACES))
def test_interface_and_dynamic_batch(name):
    inputs, outputs = INTERFACES[name]
    session = _session(name)
    for declared, expected in ((session.get_inputs(), inputs), (session.get_outputs(), outputs)):
        assert [arg.name for arg in declared] == list(expected)
        for arg in declared:
            dtype, dims = expected[arg.name]
            assert arg.type == dtype, arg.name
            assert isinstance(arg.shape[0], str), f"{arg.name}: batch dim must be dynamic"
            assert arg.shape[1:] == dims, arg.name

    rng = np.random.default_rng(0)
    for batch in (1, 5):
        feed = {
            arg: (rng.random((batch, *dims)) * 16).astype(np.float32)
            for arg, (_, dims) in inputs.items()
        }
        results = session.run(None, feed)
        for result, (arg, (_, dims)) in zip(results, outputs.items(), strict=True):
            assert result.shape == (batch, *dims), arg
            assert np.all(np.isfinite(result)), arg


@pytest.mark.parametrize("name", sorted(INTERFACES))
def test_metadata_and_config(name):
    model = onnx.load(str(REPO / name / "1" / "model.onnx"))
    assert model.producer_name == "tensorgate"
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    config = load_model_config(REPO / name)
    assert config.max_batch_size > 0


def test_mlp_is_large_enough_for_quantization():
    model = onnx.load(str(REPO / "mlp" / "1" / "model.onnx"))
    assert make_models.parameter_count(model) >= 1_000_000
    # Dynamic int8 quantization handles MatMul, not Gemm.
    assert {node.op_type for node in model.graph.node} >= {"MatMul", "Add", "Relu"}


def test_digits_held_out_accuracy_and_consistent_outputs():
    _, x_test, _, y_test = digits_split()
    assert x_test.dtype == np.float32 and y_test.dtype == np.int64
    assert x_test.shape == (450, 64) and x_test.min() == 0 and x_test.max() == 16
    label, probabilities = _session("digits").run(["label", "probabilities"], {"pixels": x_test})
    assert label.dtype == np.int64 and probabilities.dtype == np.float32
    np.testing.assert_array_equal(label, probabilities.argmax(axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float(np.mean(label == y_test))
    assert accuracy >= 0.95, accuracy


def test_committed_models_match_the_script(tmp_path):
    """Regenerates every model; each file the script writes must equal the committed one."""
    make_models.write_models(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated
    stale = [
        str(rel)
        for rel in generated
        if not (REPO / rel).is_file() or (REPO / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, (
        f"committed example models differ from the script: {stale}; "
        "run `python -m tensorgate.examples.make_models` and commit examples/models/"
    )
