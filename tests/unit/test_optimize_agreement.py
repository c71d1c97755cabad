"""Differences, top-1 agreement and accuracy of a variant's answers against the original's."""

from __future__ import annotations

import numpy as np

from tensorgate.server.tensors import TensorSpec
from tensorgate.tools.optimize.agreement import (
    accuracy,
    classifier_output,
    compare,
    label_output,
    predictions,
    run_all,
)

F32, I64 = "FP32", "INT64"
LABEL = TensorSpec("label", I64, (-1,))
PROBS = TensorSpec("probabilities", F32, (-1, 3))
EMBED = TensorSpec("embedding", F32, (-1, 1))


def test_a_classifier_output_is_float_batch_by_classes() -> None:
    assert classifier_output([LABEL, PROBS]) == "probabilities"
    assert classifier_output([EMBED]) is None
    assert classifier_output([TensorSpec("scores", F32, (-1, -1))]) is None
    assert classifier_output([TensorSpec("ids", I64, (-1, 3))]) is None
    assert label_output([PROBS, LABEL]) == "label"


def test_compare_reports_float_differences_and_top1_agreement() -> None:
    reference = {
        "label": np.array([0, 1, 2, 0]),
        "probabilities": np.array(
            [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]], np.float32
        ),
    }
    candidate = {
        "label": np.array([0, 1, 2, 1]),
        "probabilities": np.array(
            [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1]], np.float32
        ),
    }

    agreed = compare(reference, candidate, [LABEL, PROBS])

    assert agreed.top1_agreement == 0.75
    assert np.isclose(agreed.max_abs_diff, 0.1)
    assert np.isclose(agreed.mean_abs_diff, 0.2 / 12)
    assert agreed.outputs["label"] == {"exact_match": 0.75}


def test_mean_abs_diff_is_that_of_the_worst_output() -> None:
    specs = [TensorSpec("a", F32, (-1, 1)), TensorSpec("b", F32, (-1, 1))]
    reference = {"a": np.zeros((2, 1)), "b": np.zeros((2, 1))}
    candidate = {"a": np.array([[0.1], [0.1]]), "b": np.array([[0.0], [0.3]])}

    agreed = compare(reference, candidate, specs)

    assert np.isclose(agreed.max_abs_diff, 0.3)
    assert np.isclose(agreed.mean_abs_diff, 0.15)
    assert agreed.top1_agreement is None


def test_a_changed_shape_is_an_infinite_difference() -> None:
    agreed = compare({"embedding": np.zeros((2, 1))}, {"embedding": np.zeros((3, 1))}, [EMBED])

    assert agreed.max_abs_diff == float("inf")


def test_accuracy_prefers_the_models_own_label_output() -> None:
    results = {
        "label": np.array([2, 1]),
        "probabilities": np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32),
    }

    assert predictions(results, [PROBS, LABEL]).tolist() == [2, 1]
    assert accuracy(results, [PROBS, LABEL], np.array([2, 1])) == 1.0
    assert accuracy(results, [PROBS], np.array([2, 1])) == 0.5
    assert accuracy({"embedding": np.zeros((2, 1))}, [EMBED], np.array([0, 1])) is None


def test_run_all_joins_the_batches_in_order() -> None:
    def double(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [feed["x"] * 2]

    out = run_all(double, {"x": np.arange(10)}, ["y"], batch=3)

    assert out["y"].tolist() == list(range(0, 20, 2))
