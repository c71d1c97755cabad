"""ONNX Runtime sessions (CUDA when it really works, the CPU otherwise, with one clear log line) and
the runners that the batcher calls on them."""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tensorgate.server.batching import Feed, Runner
from tensorgate.server.model_config import SessionConfig

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot run here, or None when a CUDA device really answers.

    onnxruntime-gpu lists CUDAExecutionProvider even on hosts without a GPU, and a session asked for it
    then fails noisily; so ask the driver first.
    """
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1) on this host"
    if driver.cuInit(0) != 0:
        return "the NVIDIA driver did not initialise (cuInit failed)"
    count = ctypes.c_int(0)
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA device found"
    return None


def session_options(
    config: SessionConfig, intra_op_threads: int, inter_op_threads: int
) -> ort.SessionOptions:
    """Session options from a model's [session] table, with the server's thread defaults."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization_level]
    options.execution_mode = _EXECUTION_MODES[config.execution_mode]
    options.enable_cpu_mem_arena = config.enable_mem_arena
    intra = config.intra_op_threads if config.intra_op_threads is not None else intra_op_threads
    inter = config.inter_op_threads if config.inter_op_threads is not None else inter_op_threads
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    spinning = "1" if config.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    options.log_severity_level = 3  # errors only: provider fallbacks are reported by us, once
    return options


def choose_providers(requested: list[str], model_name: str) -> list[str]:
    """The requested providers that can run here, CPU always last; logs once when CUDA is dropped."""
    available = set(ort.get_available_providers())
    providers = [p for p in requested if p in available and p != CPU]
    if CUDA in providers:
        reason = cuda_unavailable_reason()
        if reason is not None:
            log.info("model %s: CUDA not used (%s); running on the CPU", model_name, reason)
            providers.remove(CUDA)
    return [*providers, CPU]


def create_session(
    path: Path,
    model_name: str,
    config: SessionConfig,
    intra_op_threads: int,
    inter_op_threads: int,
    cuda_stream_per_session: bool = True,
) -> ort.InferenceSession:
    """One ONNX Runtime session. On CUDA each session gets its own stream, so instances overlap."""
    options = session_options(config, intra_op_threads, inter_op_threads)
    providers = choose_providers(list(config.providers), model_name)
    provider_options: list[dict[str, str]] = []
    for provider in providers:
        if provider == CUDA and cuda_stream_per_session:
            cuda_options = {"do_copy_in_default_stream": "0"}
            if config.cuda_graphs:
                cuda_options["enable_cuda_graph"] = "1"
            provider_options.append(cuda_options)
        else:
            provider_options.append({})
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=providers, provider_options=provider_options
    )
    if CUDA in providers and CUDA not in session.get_providers():
        log.warning("model %s: CUDA failed to start; running on the CPU", model_name)
    return session


def _session_runner(session: Any, all_outputs: tuple[str, ...]) -> Runner:
    def run(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        names = list(outputs or all_outputs)
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


def _io_binding_runner(session: Any, all_outputs: tuple[str, ...]) -> Runner:
    """On CUDA: inputs bound from host memory, outputs allocated by ONNX Runtime and copied back
    once, without the per-run staging copies of ``session.run``. Unmeasured here (no GPU host)."""

    def run(feed: Feed, outputs: tuple[str, ...]) -> Feed:
        names = list(outputs or all_outputs)
        binding = session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))

    return run


def make_runner(session: Any, all_outputs: tuple[str, ...], io_binding: bool) -> Runner:
    if io_binding and session.get_providers()[0] == CUDA:
        return _io_binding_runner(session, all_outputs)
    return _session_runner(session, all_outputs)
