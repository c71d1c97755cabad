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
from tensorgate.server.errors import ModelNotFoundError, ModelUnavailableError, TensorgateError
from tensorgate.server.model_config import ModelConfig
from tensorgate.server.repository import ModelLocation, ModelRepository, file_digest
from tensorgate.server.sessions import create_session, make_runner
from tensorgate.server.settings import Settings
from tensorgate.server.spinning import session_config_for
from tensorgate.server.stats import ModelStats
from tensorgate.server.tensors import TensorSpec
from tensorgate.server.tracing import BatchTracer, Tracing
from tensorgate.server.warmup import warm_up

log = logging.getLogger(__name__)


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
    """Builds the sessions and the batcher of one model version; runs warmup before returning."""
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
        digest=file_digest(location.path),
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

    def _set(self, name: str, entry: _Entry) -> None:
        with self._lock:
            self._entries[name] = entry
        self._on_change(name, entry.state, entry.version)

    def load(self, name: str, version: str | None = None) -> ServedModel:
        """Loads (or reloads) a model; the old version keeps serving until the new one is ready."""
        location = self.repository.locate(name, version)
        with self._lock:
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:
            previous = self._entries.get(name)
            if previous is None or previous.model is None:
                self._set(name, _Entry(ModelState.LOADING, location.version))
            try:
                model = load_served_model(
                    location, self._settings, self._observers_for(name), self._tracing
                )
            except Exception as error:
                log.exception("model %s version %s failed to load", name, location.version)
                if previous is None or previous.model is None:
                    self._set(
                        name,
                        _Entry(ModelState.UNAVAILABLE, location.version, f"load failed: {error}"),
                    )
                raise TensorgateError(
                    f"model '{name}' version {location.version} failed to load: {error}"
                ) from error
            self._set(name, _Entry(ModelState.READY, model.version, model=model))
            log.info("model %s version %s ready on %s", name, model.version, model.provider)
        if previous is not None and previous.model is not None:
            previous.model.close(self._settings.grace_seconds)
        return model

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
        """The ready model; NOT_FOUND when unknown, UNAVAILABLE when loading or unloaded."""
        entry = self._entries.get(name)
        if entry is None:
            if name in self.repository.model_names():
                raise ModelUnavailableError(f"model '{name}' is not loaded")
            raise ModelNotFoundError(f"model '{name}' is not in the repository")
        model = entry.model
        if model is None:
            raise ModelUnavailableError(f"model '{name}' is {entry.state.lower()}")
        if version and version != model.version:
            if version.isdigit() and int(version) in self.repository.versions(name):
                raise ModelUnavailableError(
                    f"model '{name}' version '{version}' is not loaded; version {model.version} is"
                )
            raise ModelNotFoundError(f"model '{name}' has no version '{version}'")
        return model

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
