"""Warmup and ONNX Runtime session options, both read from a model's ``config.toml``.

Warmup runs a model on representative inputs before its readiness turns true, so the first request
pays none of the one-time costs (memory arena growth, kernel selection, lazy initialisation). The
``[warmup]`` table says how: ``count`` runs at each of ``batch_sizes``, on random inputs or on rows
of ``file``. A session factory calls, in this order, before readiness::

    options = session_options_from_config(config.session, settings.intra_op_threads,
                                          settings.inter_op_threads)
    session = onnxruntime.InferenceSession(path, options, providers=providers_from_config(config.session))
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
import onnxruntime as ort

from tensorgate.server.model_config import SessionConfig, WarmupConfig
from tensorgate.server.optimize.inputs import (
    Feed,
    TensorSpec,
    TensorSpecLike,
    batch_size_for,
    can_randomize,
    load_feed,
    random_feed,
    take_rows,
)

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}

#: The seed of random warmup inputs: the same inputs on every load.
WARMUP_SEED = 0


@dataclass(frozen=True)
class WarmupResult:
    """What a warmup did: ``runs`` calls of the model in ``seconds``."""

    runs: int
    seconds: float


def session_options_from_config(
    session_config: SessionConfig, default_intra: int, default_inter: int
) -> ort.SessionOptions:
    """ONNX Runtime session options from a model's ``[session]`` table.

    ``default_intra`` and ``default_inter`` (the server's settings, 0 meaning ONNX Runtime's own
    choice) apply where the model leaves its thread counts unset. Logging is kept to errors.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[session_config.graph_optimization_level]
    intra = session_config.intra_op_threads
    inter = session_config.inter_op_threads
    options.intra_op_num_threads = default_intra if intra is None else intra
    options.inter_op_num_threads = default_inter if inter is None else inter
    options.execution_mode = _EXECUTION_MODES[session_config.execution_mode]
    options.enable_cpu_mem_arena = session_config.enable_mem_arena
    options.log_severity_level = 3
    return options


def providers_from_config(
    session_config: SessionConfig, available: Sequence[str] | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """The model's preferred execution providers that this ONNX Runtime build has, in order.

    ``available`` defaults to ``onnxruntime.get_available_providers()``; a caller that knows no GPU
    answers passes the list without CUDA. The CPU provider always comes last, as the fallback. With
    ``cuda_graphs`` set, CUDA gets ``enable_cuda_graph`` (ONNX Runtime then needs fixed shapes and
    I/O binding on every run).
    """
    have = set(ort.get_available_providers() if available is None else available)
    providers: list[str | tuple[str, dict[str, str]]] = []
    for name in session_config.providers:
        if name not in have or name == CPU_PROVIDER:
            continue
        if name == CUDA_PROVIDER and session_config.cuda_graphs:
            providers.append((name, {"enable_cuda_graph": "1"}))
        else:
            providers.append(name)
    providers.append(CPU_PROVIDER)
    return providers


def representative_inputs(
    specs: Sequence[TensorSpecLike], config: WarmupConfig, model_dir: Path | None = None
) -> list[Feed]:
    """One feed per configured batch size: rows of ``config.file`` if set, else random inputs.

    ``config.file`` is relative to ``model_dir``: an ``.npy`` for a single-input model, or an
    ``.npz`` with one array per input; it is cut or repeated to each batch size. A model whose first
    dimension is fixed gets that size instead.
    """
    tensors = [TensorSpec.of(s) for s in specs]
    sizes = list(dict.fromkeys(batch_size_for(tensors, b) for b in config.batch_sizes))
    if config.file is not None:
        path = Path(config.file)
        if not path.is_absolute() and model_dir is not None:
            path = model_dir / path
        source = load_feed(path, tensors)
        return [take_rows(source, size) for size in sizes]
    rng = np.random.default_rng(WARMUP_SEED)
    return [random_feed(tensors, size, rng) for size in sizes]


def warm_up(
    run: Callable[[Mapping[str, np.ndarray]], Any],
    specs: Sequence[TensorSpecLike],
    config: WarmupConfig,
    model_dir: Path | None = None,
) -> WarmupResult:
    """Runs the model ``config.count`` times on each representative feed; returns when all are done.

    Errors of the model propagate: a model that cannot run its warmup should not become ready; so
    do a missing or ill-shaped ``config.file`` (``OptimizeError``). A model with inputs that cannot
    be made up (strings) and no ``config.file`` is not warmed up, with a warning.
    """
    started = time.monotonic()
    runs = 0
    unsupported = [s.name for s in map(TensorSpec.of, specs) if not can_randomize(s)]
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
    logger.info("warmup finished", extra={"runs": result.runs, "seconds": round(result.seconds, 4)})
    return result
