"""Loaded models: ONNX Runtime sessions behind a dynamic batcher, and their life cycle."""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorgate.server.batching import (
    BatchObserver,
    BatchRequest,
    DynamicBatcher,
    Feed,
    Runner,
)
from tensorgate.server.errors import (
    ModelControlError,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnavailableError,
    TensorgateError,
)
from tensorgate.server.model_config import ModelConfig
from tensorgate.server.repository import ModelLocation, ModelRepository, version_digest
from tensorgate.server.sessions import create_session, make_runner
from tensorgate.server.settings import Settings
from tensorgate.server.spinning import session_config_for
from tensorgate.server.stats import ModelStats
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.tracing import BatchTracer, Tracing
from tensorgate.server.validation import canonical_version
from tensorgate.server.warmup import warm_up

log = logging.getLogger(__name__)

#: the metrics label of a model or version the server does not know (callers choose them)
UNKNOWN_LABEL = "_unknown"


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ServedModel:
    """One loaded version of a model."""

    name: str
    version: str
    digest: str
    config: ModelConfig
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    provider: str
    batcher: DynamicBatcher
    runners: tuple[Runner, ...]
    batchable: bool
    stats: ModelStats = field(default_factory=ModelStats)

    def input_spec(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def submit(
        self,
        inputs: Feed,
        outputs: tuple[str, ...],
        deadline: float | None,
        trace_context: object | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> BatchRequest:
        return self.batcher.submit(
            inputs, outputs, deadline=deadline, trace_context=trace_context, loop=loop
        )

    def close(self, timeout: float) -> None:
        self.batcher.close(timeout)


def load_served_model(
    location: ModelLocation,
    settings: Settings,
    observers: Sequence[BatchObserver] = (),
    tracing: Tracing | None = None,
) -> ServedModel:
    """Builds the sessions and the batcher of one model version; runs warmup before returning.

    Raises ModelLoadError, with one line naming the file and what was expected, when the files
    cannot be served."""
    try:
        return _load_served_model(location, settings, observers, tracing)
    except TensorgateError:
        raise
    except Exception as error:
        raise ModelLoadError(load_failure_reason(location, error)) from error


def load_failure_reason(location: ModelLocation, error: BaseException) -> str:
    """One line for a model that failed to load: the file, what went wrong, what was expected."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, OSError):
        return f"{location.path}: cannot be read: {first_line}"
    if type(error).__module__.startswith("onnxruntime"):
        return (
            f"{location.path}: expected an ONNX model that ONNX Runtime can load; "
            f"{first_line.removeprefix('[ONNXRuntimeError] : ')}"
        )
    return f"{location.path}: failed to load ({type(error).__name__}: {first_line})"


def _load_served_model(
    location: ModelLocation,
    settings: Settings,
    observers: Sequence[BatchObserver],
    tracing: Tracing | None,
) -> ServedModel:
    config = location.config
    session_config = session_config_for(location, settings)
    sessions = [
        create_session(
            location.path,
            location.name,
            session_config,
            settings.worker_intra_op_threads,
            settings.inter_op_threads,
        )
        for _ in range(config.instances)
    ]
    first = sessions[0]
    inputs = tuple(TensorSpec.from_ort(node) for node in first.get_inputs())
    outputs = tuple(TensorSpec.from_ort(node) for node in first.get_outputs())
    output_names = tuple(t.name for t in outputs)
    runners = tuple(make_runner(s, output_names, config.session.io_binding) for s in sessions)
    stats = ModelStats()
    batchable = config.max_batch_size > 0 and all(t.has_dynamic_batch for t in (*inputs, *outputs))
    batcher = DynamicBatcher(
        location.name,
        runners,
        max_batch_size=config.max_batch_size if batchable else 0,
        config=config.dynamic_batching,
        batchable=batchable,
        observers=[stats, *observers],
    )
    model = ServedModel(
        name=location.name,
        version=location.version,
        digest=version_digest(location.path.parent),
        config=config,
        inputs=inputs,
        outputs=outputs,
        provider=first.get_providers()[0],
        batcher=batcher,
        runners=runners,
        batchable=batchable,
        stats=stats,
    )
    if tracing is not None and tracing.enabled:
        batcher.add_observer(BatchTracer(tracing, model.name, model.version, model.provider))
    if settings.warmup:
        warm_up_model(model, location.path.parent.parent)
    return model


def warm_up_model(model: ServedModel, model_dir: Path) -> None:
    """Runs every instance on representative inputs so the first request pays no one-time cost."""
    for runner in model.runners:
        warm_up(
            lambda feed, run=runner: run(dict(feed), ()),
            model.inputs,
            model.config.warmup,
            model_dir,
        )


@dataclass
class _Entry:
    state: ModelState
    version: str = ""
    reason: str = ""
    model: ServedModel | None = None
    #: the last load failed (the model is broken on disk), as opposed to loading or unloaded
    failed: bool = False


#: Model control modes (as in Triton): who may change the loaded models at run time
CONTROL_NONE, CONTROL_EXPLICIT, CONTROL_POLL = "none", "explicit", "poll"


class ModelManager:
    """Loads, swaps and unloads models at run time without disturbing requests to other models."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        observers_for: Callable[[str], Sequence[BatchObserver]] = lambda name: (),
        on_change: Callable[[str, ModelState, str], None] = lambda n, s, v: None,
        tracing: Tracing | None = None,
    ) -> None:
        self.repository = repository
        self._settings = settings
        self._tracing = tracing
        self._observers_for = observers_for
        self._on_change = on_change
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        #: metric labels: the models this server knows and the versions each has served
        self._label_versions: dict[str, frozenset[str]] = {}

    def _set(self, name: str, entry: _Entry) -> None:
        with self._lock:
            self._entries[name] = entry
            if entry.model is not None:
                known = self._label_versions.get(name, frozenset())
                self._label_versions[name] = known | {entry.model.version}
            else:
                self._label_versions.setdefault(name, frozenset())
        self._on_change(name, entry.state, entry.version)

    def load(self, name: str, version: str | None = None) -> ServedModel:
        """Loads (or reloads) a model; the old version keeps serving until the new one is ready.

        A model that cannot load becomes UNAVAILABLE with a one-line reason (ModelLoadError);
        the other models are not touched."""
        with self._lock:
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            previous = self._entries.get(name)
            serving = previous.model if previous is not None else None
            try:
                location = self.repository.locate(name, version)
                if serving is None:
                    self._set(name, _Entry(ModelState.LOADING, location.version))
                model = load_served_model(
                    location, self._settings, self._observers_for(name), self._tracing
                )
            except ModelLoadError as error:
                log.error("model %s failed to load: %s", name, error.message)
                if serving is None:
                    versions = self.repository.versions(name)
                    attempted = str(versions[-1]) if versions else ""
                    failure = _Entry(ModelState.UNAVAILABLE, attempted, error.message, failed=True)
                    self._set(name, failure)
                else:
                    reason = f"{error.message}; version {serving.version} still serves"
                    self._set(name, _Entry(ModelState.READY, serving.version, reason, serving))
                raise
            self._set(name, _Entry(ModelState.READY, model.version, model=model))
            log.info("model %s version %s ready on %s", name, model.version, model.provider)
        if serving is not None:
            serving.close(self._settings.grace_seconds)
        return model

    def request_load(self, name: str) -> ServedModel:
        """RepositoryModelLoad: allowed only in the explicit control mode."""
        self._check_control("RepositoryModelLoad")
        return self.load(name)

    def request_unload(self, name: str) -> None:
        """RepositoryModelUnload: allowed only in the explicit control mode."""
        self._check_control("RepositoryModelUnload")
        self.unload(name)

    def _check_control(self, call: str) -> None:
        mode = self._settings.model_control_mode
        if mode == CONTROL_EXPLICIT:
            return
        how = (
            "the repository on disk decides what is served: change its files"
            if mode == CONTROL_POLL
            else "start the workers with --model-control-mode explicit or poll"
        )
        raise ModelControlError(f"{call} is refused: the model control mode is '{mode}'; {how}")

    def remove(self, name: str) -> None:
        """Unloads a model that left the repository and forgets it."""
        self.unload(name)
        with self._lock:
            self._entries.pop(name, None)
            self._label_versions.pop(name, None)
        self._on_change(name, ModelState.UNAVAILABLE, "")

    def unload(self, name: str) -> None:
        """Stops new requests at once; requests already accepted finish before the sessions go."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or entry.model is None:
            if name not in self.repository.model_names():
                raise ModelNotFoundError(f"model '{name}' is not in the repository")
            return
        self._set(name, _Entry(ModelState.UNLOADING, entry.version))
        entry.model.close(self._settings.grace_seconds)
        self._set(name, _Entry(ModelState.UNAVAILABLE, entry.version, "unloaded"))

    def get(self, name: str, version: str = "") -> ServedModel:
        """The ready model; NOT_FOUND when unknown, UNAVAILABLE when loading or unloaded.

        Versions are canonical integers: "01" is version 1; what is not a version is NOT_FOUND."""
        entry = self._entries.get(name)
        if entry is None:
            if name in self.repository.model_names():
                raise ModelUnavailableError(f"model '{name}' is not loaded")
            raise ModelNotFoundError(f"model '{name[:128]}' is not in the repository")
        model = entry.model
        if model is None:
            detail = f": {entry.reason}" if entry.failed else ""
            raise ModelUnavailableError(f"model '{name}' is {entry.state.lower()}{detail}")
        if version:
            number = canonical_version(version)
            if number is None:
                raise ModelNotFoundError(f"model '{name}' has no version '{version[:32]}'")
            if number != int(model.version):
                if number in self.repository.versions(name):
                    raise ModelUnavailableError(
                        f"model '{name}' version '{number}' is not loaded; version {model.version} is"
                    )
                raise ModelNotFoundError(f"model '{name}' has no version '{number}'")
        return model

    def metric_labels(self, name: str, version: str) -> tuple[str, str]:
        """Labels a caller cannot multiply: a model this server knows, and a version it has
        served; anything else is ``_unknown``."""
        versions = self._label_versions.get(name)
        if versions is None:
            return UNKNOWN_LABEL, ""
        if version in versions:
            return name, version
        number = canonical_version(version)
        return name, str(number) if number is not None and str(
            number
        ) in versions else UNKNOWN_LABEL

    def readiness(self, strict: bool) -> bool:
        """Strict: at least one model is ready and none failed to load (a model still loading at
        start keeps the server unready, since start() loads them all first). Relaxed: at least
        one is ready."""
        with self._lock:
            entries = list(self._entries.values())
        ready = any(e.state == ModelState.READY for e in entries)
        if not strict:
            return ready
        return ready and not any(e.failed for e in entries)

    def queue_depths(self) -> dict[str, int]:
        return {model.name: model.batcher.queue_depth for model in self.ready_models()}

    def ready_models(self) -> list[ServedModel]:
        with self._lock:
            return [e.model for e in self._entries.values() if e.model is not None]

    def index(self) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) for every model on disk or loaded."""
        with self._lock:
            entries = dict(self._entries)
        rows = []
        for name in sorted(set(self.repository.model_names()) | set(entries)):
            entry = entries.get(name)
            if entry is None:
                versions = self.repository.versions(name)
                rows.append(
                    (
                        name,
                        str(versions[-1]) if versions else "",
                        ModelState.UNAVAILABLE.value,
                        "not loaded",
                    )
                )
            else:
                rows.append((name, entry.version, entry.state.value, entry.reason))
        return rows

    def close_all(self, timeout: float) -> None:
        for model in self.ready_models():
            model.close(timeout)
