"""Warmup: a model runs on representative inputs before its readiness turns true.

The first request then pays none of the one-time costs (memory arena growth, kernel selection, lazy
initialisation). The model's ``[warmup]`` table in ``config.toml`` says how: ``count`` runs at each
of ``batch_sizes``, on random inputs or on rows of ``file``. The model loader calls, before the
model is marked ready::

    warm_up(lambda feed: session.run(None, feed), input_specs, config.warmup, model_dir)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorgate.server.inputs import (
    Feed,
    batch_size_for,
    can_randomize,
    load_feed,
    random_feed,
    take_rows,
)
from tensorgate.server.model_config import WarmupConfig
from tensorgate.server.tensors import TensorSpec

logger = logging.getLogger(__name__)

#: The seed of random warmup inputs: the same inputs on every load.
WARMUP_SEED = 0


@dataclass(frozen=True)
class WarmupResult:
    """What a warmup did: ``runs`` calls of the model in ``seconds``."""

    runs: int
    seconds: float


def representative_inputs(
    specs: Sequence[TensorSpec], config: WarmupConfig, model_dir: Path | None = None
) -> list[Feed]:
    """One feed per configured batch size: rows of ``config.file`` if set, else random inputs.

    ``config.file`` is relative to ``model_dir``: an ``.npy`` for a single-input model, or an
    ``.npz`` with one array per input; it is cut or repeated to each batch size. A model whose first
    dimension is fixed gets that size instead.
    """
    sizes = list(dict.fromkeys(batch_size_for(specs, b) for b in config.batch_sizes))
    if config.file is not None:
        path = Path(config.file)
        if not path.is_absolute() and model_dir is not None:
            path = model_dir / path
        source = load_feed(path, specs)
        return [take_rows(source, size) for size in sizes]
    rng = np.random.default_rng(WARMUP_SEED)
    return [random_feed(specs, size, rng) for size in sizes]


def warm_up(
    run: Callable[[Mapping[str, np.ndarray]], Any],
    specs: Sequence[TensorSpec],
    config: WarmupConfig,
    model_dir: Path | None = None,
) -> WarmupResult:
    """Runs the model ``config.count`` times on each representative feed; returns when all are done.

    Errors of the model propagate: a model that cannot run its warmup should not become ready; so
    do a missing or ill-shaped ``config.file`` (``InputError``). A model with inputs that cannot
    be made up (strings) and no ``config.file`` is not warmed up, with a warning.
    """
    started = time.monotonic()
    runs = 0
    unsupported = [s.name for s in specs if not can_randomize(s)]
    if config.file is None and unsupported:
        logger.warning(
            "warmup skipped: no random inputs for %s; set warmup.file", ", ".join(unsupported)
        )
    elif config.count > 0:
        for feed in representative_inputs(specs, config, model_dir):
            for _ in range(config.count):
                run(feed)
                runs += 1
    result = WarmupResult(runs, time.monotonic() - started)
    logger.info("warmup finished: %d runs in %.3f s", result.runs, result.seconds)
    return result
