"""The ``poll`` model control mode: each worker reads the repository at an interval and follows it.

A model whose files changed (config.toml, any version's files, a new version folder) is loaded
again; the old version serves until the new one is ready. A model that left the repository is
unloaded and forgotten. A model that failed to load is tried again only once its files change, so
a broken model costs one log line per change, not one per poll. Every worker of a fleet does the
same on its own: that is how workers behind Envoy change models together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from tensorgate.server.errors import TensorgateError
from tensorgate.server.models import ModelManager

log = logging.getLogger(__name__)


class RepositoryPoller:
    """``sync()`` once to load what is there, then ``start()`` the thread; ``stop()`` ends it."""

    def __init__(
        self, models: ModelManager, interval_s: float, only: Iterable[str] | None = None
    ) -> None:
        self._models = models
        self._interval_s = interval_s
        self._only = set(only) if only is not None else None
        self._seen: dict[str, tuple[object, ...]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="repository-poller", daemon=True)

    def sync(self) -> None:
        """Loads new and changed models, removes the ones that left the repository."""
        repository = self._models.repository
        names = repository.model_names()
        if self._only is not None:
            names = [n for n in names if n in self._only]
        for name in names:
            if self._stop.is_set():
                return
            fingerprint = repository.fingerprint(name)
            if self._seen.get(name) == fingerprint:
                continue
            self._seen[name] = fingerprint
            try:
                self._models.load(name)
            except TensorgateError as error:  # the model is UNAVAILABLE with its reason
                log.debug("poll: %s did not load: %s", name, error.message)
        for name in set(self._seen) - set(names):
            del self._seen[name]
            log.info("poll: model %s left the repository; unloading it", name)
            try:
                self._models.remove(name)
            except TensorgateError as error:
                log.warning("poll: unloading %s failed: %s", name, error.message)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sync()
            except Exception:  # the thread must outlive any surprise, or polling would stop
                log.exception("poll: reading the repository failed")
