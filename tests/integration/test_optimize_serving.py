"""Every optimized variant of ``digits`` loads and serves through a real ``tensorgate serve``, and
answers like the original within the documented tolerances; the accepted one is served as a new
version while the variants beside the original are never served by accident."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tensorgate.cli.main import main
from tensorgate.client import Client
from tensorgate.examples.datasets import digits_split
from tests.support.processes import EXAMPLE_MODELS, ServerProcess, serve

VARIANTS = ("graph", "fp16", "int8", "int8-static")
#: docs/optimization.md, "Tolerances": max |diff| for graph and fp16, top-1 agreement for int8.
MAX_ABS_DIFF = {"graph": 1e-5, "fp16": 1e-2}
MIN_TOP1_AGREEMENT = 0.95
REQUEST_ROWS = 50


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits optimized with every variant, graph accepted as version 2; beside it, each variant
    as a model of its own (``digits-<variant>``), to serve them all at once."""
    root = tmp_path_factory.mktemp("optimized")
    repo = root / "models"
    shutil.copytree(EXAMPLE_MODELS / "digits", repo / "digits")
    x_train, x_test, _, y_test = digits_split()
    for name, array in {"cal": x_train[:256], "x": x_test, "y": y_test}.items():
        np.save(root / f"{name}.npy", array)
    code = main(
        [
            "optimize",
            "digits",
            f"--model-repository={repo}",
            f"--calibration={root / 'cal.npy'}",
            f"--validation={root / 'x.npy'}",
            f"--labels={root / 'y.npy'}",
            "--accept=max_abs_diff<=1e-6",
            "--measure-seconds=0.05",
            "--no-progress",
        ]
    )
    assert code == 0
    for variant in VARIANTS:
        target = repo / f"digits-{variant}" / "1"
        target.mkdir(parents=True)
        shutil.copy(repo / "digits" / "1" / "variants" / variant / "model.onnx", target)
        shutil.copy(repo / "digits" / "config.toml", target.parent)
    return repo


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve(repository, log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.target, timeout=20) as c:
        yield c


def served_answers(client: Client, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    parts = [
        client.infer(model, {"pixels": x[i : i + REQUEST_ROWS]})
        for i in range(0, len(x), REQUEST_ROWS)
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def local_answers(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"pixels": x}), strict=True))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_serves_with_the_originals_tensors_and_answers(
    client: Client, repository: Path, variant: str
) -> None:
    x_test = digits_split()[1]
    original = local_answers(repository / "digits" / "1" / "model.onnx", x_test)

    metadata = client.metadata(f"digits-{variant}")
    served = served_answers(client, f"digits-{variant}", x_test)

    assert {(t.name, t.datatype, t.shape) for t in metadata.inputs} == {
        ("pixels", "FP32", (-1, 64))
    }
    assert {(t.name, t.datatype) for t in metadata.outputs} == {
        ("label", "INT64"),
        ("probabilities", "FP32"),
    }
    top1 = float((served["label"] == original["label"]).mean())
    assert top1 >= MIN_TOP1_AGREEMENT
    if variant in MAX_ABS_DIFF:
        diff = np.abs(served["probabilities"] - original["probabilities"]).max()
        assert diff <= MAX_ABS_DIFF[variant]


def test_the_accepted_variant_is_served_as_the_new_version(
    client: Client, repository: Path
) -> None:
    x = digits_split()[1][:REQUEST_ROWS]
    expected = local_answers(repository / "digits" / "1" / "variants" / "graph" / "model.onnx", x)

    result = client.infer_result("digits", {"pixels": x})

    assert result.model_version == "2"
    np.testing.assert_array_equal(result.outputs["label"], expected["label"])
    served = {(m.name, m.version) for m in client.models()}
    assert served == {("digits", "2"), *((f"digits-{v}", "1") for v in VARIANTS)}
