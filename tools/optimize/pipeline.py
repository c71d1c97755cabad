"""One ``tensorgate optimize`` run: build the variants, measure them beside the original, report,
and with ``--accept`` promote the fastest variant that passes."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

from tensorgate.server.inputs import (
    Feed,
    batch_size_for,
    load_feed,
    random_feed,
    rows,
    take_rows,
)
from tensorgate.server.model_config import ModelConfig, load_model_config
from tensorgate.server.sessions import create_session
from tensorgate.server.tensors import TensorSpec, session_specs
from tensorgate.tools.optimize import accept, agreement, promote, report
from tensorgate.tools.optimize.errors import OptimizeError
from tensorgate.tools.optimize.measure import measure_speed
from tensorgate.tools.optimize.variants import VARIANTS, applicable_variants, resolve_variants

logger = logging.getLogger(__name__)

VARIANTS_DIR = "variants"
REPORT_FILE = "report.json"
ORIGINAL = "original"
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 32
#: Rows of random validation inputs when no --validation file is given, and their seed.
RANDOM_VALIDATION_ROWS = 256
RANDOM_VALIDATION_SEED = 0
MEASURE_ROUNDS = 3


class Progress(Protocol):
    """The part of a ``tqdm`` bar the pipeline uses."""

    def update(self, n: int = 1) -> Any: ...

    def set_description(self, desc: str | None = None, refresh: bool = True) -> Any: ...

    def close(self) -> Any: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        """Shows nothing."""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Shows nothing."""

    def close(self) -> None:
        """Shows nothing."""


@dataclass(frozen=True)
class OptimizeRequest:
    """What to optimize and how; paths as given on the command line."""

    repository: Path
    model: str
    version: int | None = None
    variants: Sequence[str] | None = None
    validation: Path | None = None
    labels: Path | None = None
    calibration: Path | None = None
    accept: str | None = None
    measure_seconds: float = 3.0
    intra_op_threads: int = 0
    inter_op_threads: int = 1


@dataclass
class OptimizeResult:
    """The report, where it was written, and what ``--accept`` decided.

    ``pinned_version`` is set when config.toml pins a version, so the new one is not served yet.
    """

    report: dict[str, Any]
    report_path: Path
    selected: str | None = None
    new_version: int | None = None
    rejected: dict[str, list[str]] = field(default_factory=dict)
    pinned_version: int | None = None


@dataclass
class _Model:
    """A loaded model: its session and load time, for the original and each variant alike."""

    path: Path
    session: ort.InferenceSession
    load_ms: float

    def run(self, feed: Feed) -> list[np.ndarray]:
        return self.session.run(None, feed)


@dataclass
class _Plan:
    """Everything resolved and checked before any variant is built."""

    request: OptimizeRequest
    model_dir: Path
    config: ModelConfig
    version: int
    source: Path
    criteria: list[accept.Criterion] | None
    original: _Model
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    validation: Feed
    validation_info: dict[str, Any]
    labels: np.ndarray | None
    calibration: Feed | None
    names: list[str]

    @property
    def variants_dir(self) -> Path:
        return self.source.parent / VARIANTS_DIR

    @property
    def steps(self) -> int:
        """Progress steps: a build and a validation per variant, and the measurement rounds."""
        return 2 * len(self.names) + 1 + (1 + len(self.names)) * MEASURE_ROUNDS


def optimize_model(
    request: OptimizeRequest, progress: Callable[[int], Progress] = lambda total: _NoProgress()
) -> OptimizeResult:
    """Runs the whole optimization; raises ``OptimizeError`` for bad arguments or inputs."""
    plan = _plan(request)
    bar = progress(plan.steps)
    try:
        models, errors = _build_and_load(plan, bar)
        results = _evaluate(plan, models, errors, bar)
        speeds = measure_speed(
            {name: model.run for name, model in models.items()},
            take_rows(plan.validation, batch_size_for(plan.inputs, LATENCY_BATCH)),
            take_rows(plan.validation, batch_size_for(plan.inputs, THROUGHPUT_BATCH)),
            request.measure_seconds,
            MEASURE_ROUNDS,
            on_round=lambda name: _step(bar, f"measuring {name}"),
        )
    finally:
        bar.close()
    figures = {
        name: report.figures(model.path, model.load_ms, speeds[name], results[name][1])
        for name, model in models.items()
    }
    entries: dict[str, dict[str, Any]] = {}
    for name in plan.names:
        if name in errors:
            entries[name] = report.failed_entry(name, errors[name])
        else:
            agreed = results[name][0]
            values = report.metrics(figures[ORIGINAL], figures[name], agreed)
            entries[name] = report.variant_entry(name, figures[name], values, agreed)
    result = OptimizeResult(
        report=_report(plan, figures[ORIGINAL], entries),
        report_path=plan.variants_dir / REPORT_FILE,
    )
    if plan.criteria is not None:
        _select(plan, plan.criteria, result)
    report.write(result.report, result.report_path)
    return result


def _plan(request: OptimizeRequest) -> _Plan:
    model_dir = request.repository / request.model
    if not model_dir.is_dir():
        raise OptimizeError(f"no model {request.model!r} in {request.repository}")
    config = load_model_config(model_dir)
    version = _source_version(model_dir, request.version or config.version)
    source = model_dir / str(version) / promote.MODEL_FILE
    criteria = accept.parse_criteria(request.accept) if request.accept else None
    if criteria and request.labels is None:
        needs = sorted({c.metric for c in criteria} & accept.LABEL_METRICS)
        if needs:
            raise OptimizeError(f"{', '.join(needs)} needs --labels FILE.npy")
    original = _load(source, config, request)
    inputs, outputs = session_specs(original.session)
    validation, validation_info = _validation(request.validation, inputs)
    calibration = load_feed(request.calibration, inputs) if request.calibration else None
    has_calibration = calibration is not None
    default = applicable_variants(onnx.load(str(source), load_external_data=False), has_calibration)
    return _Plan(
        request=request,
        model_dir=model_dir,
        config=config,
        version=version,
        source=source,
        criteria=criteria,
        original=original,
        inputs=inputs,
        outputs=outputs,
        validation=validation,
        validation_info=validation_info,
        labels=_labels(request.labels, rows(validation)),
        calibration=calibration,
        names=resolve_variants(request.variants, default, has_calibration),
    )


def _source_version(model_dir: Path, wanted: int | None) -> int:
    available = promote.versions(model_dir)
    if not available:
        raise OptimizeError(f"{model_dir}: no numeric version directory")
    version = available[-1] if wanted is None else wanted
    if version not in available or not (model_dir / str(version) / promote.MODEL_FILE).is_file():
        raise OptimizeError(f"{model_dir}: no version {version} with a {promote.MODEL_FILE}")
    return version


def _load(path: Path, config: ModelConfig, request: OptimizeRequest) -> _Model:
    """A session opened exactly as the server opens it (session options, providers, CUDA probe)."""
    started = time.perf_counter()
    session = create_session(
        path, request.model, config.session, request.intra_op_threads, request.inter_op_threads
    )
    return _Model(path, session, (time.perf_counter() - started) * 1e3)


def _validation(path: Path | None, inputs: list[TensorSpec]) -> tuple[Feed, dict[str, Any]]:
    if path is not None:
        feed = load_feed(path, inputs)
        return feed, {"source": "file", "file": str(path), "rows": rows(feed)}
    rng = np.random.default_rng(RANDOM_VALIDATION_SEED)
    feed = random_feed(inputs, batch_size_for(inputs, RANDOM_VALIDATION_ROWS), rng)
    info = {"source": "random", "file": None, "rows": rows(feed), "seed": RANDOM_VALIDATION_SEED}
    return feed, info


def _labels(path: Path | None, expected_rows: int) -> np.ndarray | None:
    if path is None:
        return None
    if not path.is_file():
        raise OptimizeError(f"{path}: no such file")
    labels = np.load(path, allow_pickle=False)
    if labels.ndim != 1 or len(labels) != expected_rows:
        raise OptimizeError(
            f"{path}: want one label per validation row ({expected_rows}), got shape {labels.shape}"
        )
    return labels


def _build_and_load(plan: _Plan, bar: Progress) -> tuple[dict[str, _Model], dict[str, str]]:
    """The original and every variant that builds and loads; why the others failed."""
    models = {ORIGINAL: plan.original}
    errors: dict[str, str] = {}
    for name in plan.names:
        _step(bar, f"building {name}")
        folder = plan.variants_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        target = folder / promote.MODEL_FILE
        try:
            VARIANTS[name].build(plan.source, target, plan.calibration)
        except Exception as exc:
            logger.warning("variant %s failed to build", name, exc_info=True)
            errors[name] = f"build failed: {exc}"
            continue
        try:
            models[name] = _load(target, plan.config, plan.request)
        except Exception as exc:
            errors[name] = f"does not load: {exc}"
    return models, errors


def _evaluate(
    plan: _Plan, models: dict[str, _Model], errors: dict[str, str], bar: Progress
) -> dict[str, tuple[agreement.Agreement | None, float | None]]:
    """Each model's agreement with the original and its accuracy, on the validation inputs.

    A variant that fails to run is dropped from ``models`` and its error kept in ``errors``.
    """
    names = [spec.name for spec in plan.outputs]
    reference = agreement.run_all(plan.original.run, plan.validation, names)
    results: dict[str, tuple[agreement.Agreement | None, float | None]] = {}
    for name, model in list(models.items()):
        _step(bar, f"validating {name}")
        agreed = None
        answers = reference
        if name != ORIGINAL:
            try:
                answers = agreement.run_all(model.run, plan.validation, names)
            except Exception as exc:
                errors[name] = f"does not run: {exc}"
                del models[name]
                continue
            agreed = agreement.compare(reference, answers, plan.outputs)
        correct = None
        if plan.labels is not None:
            correct = agreement.accuracy(answers, plan.outputs, plan.labels)
        results[name] = (agreed, correct)
    return results


def _report(
    plan: _Plan, original: dict[str, Any], entries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    labels = plan.request.labels
    return report.build(
        model=plan.request.model,
        version=plan.version,
        source_digest=promote.sha256_digest(plan.source),
        machine=_machine(plan.original),
        validation=plan.validation_info | {"labels": str(labels) if labels else None},
        measurement={
            "latency_batch": batch_size_for(plan.inputs, LATENCY_BATCH),
            "throughput_batch": batch_size_for(plan.inputs, THROUGHPUT_BATCH),
            "seconds_per_model": plan.request.measure_seconds,
            "rounds": MEASURE_ROUNDS,
        },
        original=original,
        variants=entries,
        accept=None,
    )


def _select(plan: _Plan, criteria: list[accept.Criterion], result: OptimizeResult) -> None:
    """Marks each variant accepted or not, and promotes the fastest accepted one."""
    entries = result.report["variants"]
    passing: dict[str, float] = {}
    for name, entry in entries.items():
        if entry["status"] == "ok":
            reasons = accept.failures(criteria, entry["metrics"])
        else:
            reasons = [entry["error"]]
        entry["accepted"] = not reasons
        entry["failures"] = reasons
        if reasons:
            result.rejected[name] = reasons
        else:
            passing[name] = entry["throughput"]
    result.selected = accept.choose(passing)
    if result.selected is not None:
        chosen = entries[result.selected]
        result.new_version = promote.promote(
            plan.model_dir,
            plan.source.parent / chosen["file"],
            {
                "source_version": plan.version,
                "source_digest": result.report["source_digest"],
                "variant": result.selected,
                "criteria": plan.request.accept,
                "measured": {k: v for k, v in chosen.items() if k in report.MEASURED_KEYS},
                "original": result.report["original"],
                "validation": result.report["validation"],
                "machine": result.report["machine"],
                "created_at": _now(),
            },
        )
        if plan.config.version is not None:
            result.pinned_version = plan.config.version
    result.report["accept"] = {
        "criteria": plan.request.accept,
        "selected": result.selected,
        "new_version": result.new_version,
    }


def _machine(original: _Model) -> dict[str, Any]:
    return {
        "onnxruntime": ort.__version__,
        "providers": original.session.get_providers(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "measured_at": _now(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _step(bar: Progress, description: str) -> None:
    bar.set_description(description)
    bar.update()
