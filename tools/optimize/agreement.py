"""How closely a variant answers like the original, and how accurate each is against labels.

- ``max_abs_diff`` is the largest absolute difference over every float output; ``mean_abs_diff`` is
  the mean absolute difference of the float output where that mean is largest. Integer outputs
  (such as a predicted label) are compared for exact equality instead (``exact_match``).
- A *classifier output* is the first float output of shape ``[batch, C]`` with a fixed ``C > 1``;
  ``top1_agreement`` is the share of rows whose argmax over it is the same in both models.
- A *prediction* is the first integer output of shape ``[batch]`` (the model's own label), or else
  the argmax of the classifier output; ``accuracy`` is the share of predictions equal to the labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tensorgate.server.inputs import Feed, chunks
from tensorgate.server.tensors import TensorSpec

Outputs = dict[str, np.ndarray]

#: Rows per run when a whole validation set goes through a model.
EVAL_BATCH = 256


@dataclass(frozen=True)
class Agreement:
    """A variant's outputs against the original's; ``None`` where the model has no such output."""

    max_abs_diff: float | None
    mean_abs_diff: float | None
    top1_agreement: float | None
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)


def classifier_output(outputs: Sequence[TensorSpec]) -> str | None:
    """The first float output shaped ``[batch, C]`` with a fixed ``C > 1``."""
    for spec in outputs:
        if spec.is_float and len(spec.shape) == 2 and (spec.shape[1] or 0) > 1:
            return spec.name
    return None


def label_output(outputs: Sequence[TensorSpec]) -> str | None:
    """The first integer output shaped ``[batch]``: a label the model predicts itself."""
    for spec in outputs:
        if np.issubdtype(spec.dtype, np.integer) and len(spec.shape) == 1:
            return spec.name
    return None


def run_all(
    run: Callable[[Feed], Sequence[np.ndarray]],
    feed: Feed,
    output_names: Sequence[str],
    batch: int = EVAL_BATCH,
) -> Outputs:
    """Every output of the model over the whole feed, run ``batch`` rows at a time."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
    for chunk in chunks(feed, batch):
        for name, value in zip(output_names, run(chunk), strict=True):
            parts[name].append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def compare(reference: Outputs, candidate: Outputs, outputs: Sequence[TensorSpec]) -> Agreement:
    """Differences of ``candidate`` from ``reference`` over the same inputs."""
    per_output: dict[str, dict[str, float]] = {}
    max_diffs: list[float] = []
    mean_diffs: list[float] = []
    for spec in outputs:
        want, got = reference[spec.name], candidate[spec.name]
        if want.shape != got.shape:
            per_output[spec.name] = {"shape_mismatch": 1.0}
            max_diffs.append(float("inf"))
            mean_diffs.append(float("inf"))
        elif spec.is_float:
            diff = np.abs(want.astype(np.float64) - got.astype(np.float64))
            stats = {"max_abs_diff": float(diff.max(initial=0.0)), "mean_abs_diff": _mean(diff)}
            per_output[spec.name] = stats
            max_diffs.append(stats["max_abs_diff"])
            mean_diffs.append(stats["mean_abs_diff"])
        else:
            per_output[spec.name] = {"exact_match": _mean(want == got)}
    classifier = classifier_output(outputs)
    top1 = None
    if classifier is not None and reference[classifier].shape == candidate[classifier].shape:
        top1 = _mean(reference[classifier].argmax(axis=1) == candidate[classifier].argmax(axis=1))
    return Agreement(
        max_abs_diff=max(max_diffs) if max_diffs else None,
        mean_abs_diff=max(mean_diffs) if mean_diffs else None,
        top1_agreement=top1,
        outputs=per_output,
    )


def predictions(
    results: Mapping[str, np.ndarray], outputs: Sequence[TensorSpec]
) -> np.ndarray | None:
    """The predicted class of each row: the label output, else the classifier output's argmax."""
    label = label_output(outputs)
    if label is not None:
        return results[label]
    classifier = classifier_output(outputs)
    if classifier is not None:
        return results[classifier].argmax(axis=1)
    return None


def accuracy(
    results: Mapping[str, np.ndarray], outputs: Sequence[TensorSpec], labels: np.ndarray
) -> float | None:
    """The share of rows predicted as labelled; ``None`` when the model predicts no class."""
    predicted = predictions(results, outputs)
    if predicted is None:
        return None
    return _mean(predicted.reshape(-1) == labels.reshape(-1))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0
