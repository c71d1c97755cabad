"""The optional per-model configuration file, ``<repo>/<model>/config.toml``.

Every key is optional: inputs and outputs are read from the ONNX graph. See docs/model-repository.md.
"""

from __future__ import annotations

import difflib
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tensorgate.server.errors import ModelLoadError

CONFIG_FILE_NAME = "config.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DynamicBatchingConfig(_Strict):
    """How concurrent requests are merged along the batch dimension."""

    enabled: bool = True
    max_queue_delay_us: int = Field(0, ge=0, description="wait this long for a fuller batch")
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(1024, ge=1, description="beyond it, RESOURCE_EXHAUSTED")


class CacheConfig(_Strict):
    """Response cache for this model; on by default unless the model is nondeterministic."""

    enabled: bool | None = None
    ttl_s: float = Field(0.0, ge=0, description="0 keeps entries until evicted")


class SessionConfig(_Strict):
    """ONNX Runtime session options for this model."""

    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_threads: int | None = Field(None, ge=0, description="None: the server's default")
    inter_op_threads: int | None = Field(None, ge=0)
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    enable_mem_arena: bool = True
    allow_spinning: bool | None = Field(
        None,
        description="ONNX Runtime's pool threads busy-wait for the next op (true) or leave the "
        "cores to the request threads (false); unset: measured at load, off unless faster "
        "(server/spinning.py)",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    io_binding: bool = True
    cuda_graphs: bool = False

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: list[str]) -> list[str]:
        """A misspelt provider is an error, not a silent fall back to the CPU."""
        import onnxruntime as ort  # here: reading a config must not load ONNX Runtime at import

        known = ort.get_all_providers()
        for provider in providers:
            if provider not in known:
                close = difflib.get_close_matches(provider, known, n=1)
                expected = f"did you mean '{close[0]}'?" if close else f"expected some of {known}"
                raise ValueError(
                    f"'{provider}' is not an ONNX Runtime execution provider ({expected})"
                )
        return providers


class WarmupConfig(_Strict):
    """Runs before readiness turns true, so the first request pays no one-time cost."""

    count: int = Field(3, ge=0, description="runs per batch size")
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    file: str | None = Field(None, description=".npy of inputs, relative to the model dir")


class ModelConfig(_Strict):
    """Everything a model directory's config.toml may set."""

    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    version: int | None = Field(None, description="serve this version instead of the newest")
    max_batch_size: int = Field(64, ge=0, description="0 disables batching")
    instances: int = Field(1, ge=1, description="ONNX Runtime sessions fed by one batcher")
    nondeterministic: bool = False
    dynamic_batching: DynamicBatchingConfig = Field(default_factory=DynamicBatchingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)

    @cached_property  # read on every request: resolved once, from a config that is never changed
    def cache_enabled(self) -> bool:
        if self.cache.enabled is not None:
            return self.cache.enabled
        return not self.nondeterministic


def load_model_config(model_dir: Path) -> ModelConfig:
    """Reads ``config.toml`` from a model directory; defaults when there is none.

    Raises ModelLoadError with one line naming the file, the key or line, and what was expected.
    """
    path = model_dir / CONFIG_FILE_NAME
    if not path.is_file():
        return ModelConfig()
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ModelLoadError(f"{path}: TOML syntax error: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{path}: cannot be read: {error}") from None
    try:
        return ModelConfig.model_validate(table)
    except ValidationError as error:
        raise ModelLoadError(f"{path}: {_first_problem(error)}") from None


def _first_problem(error: ValidationError) -> str:
    """The first validation error as one line: the dotted key, and what was expected."""
    problem = error.errors()[0]
    location = [str(part) for part in problem["loc"]]
    key = ".".join(location)
    if problem["type"] == "extra_forbidden":
        allowed = sorted(_table_fields(location[:-1]))
        close = difflib.get_close_matches(location[-1], allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}; expected one of {allowed}"
    if problem["type"] == "value_error":
        return f"key '{key}': {problem['msg'].removeprefix('Value error, ')}"
    return f"key '{key}': {problem['msg']}; received {problem.get('input')!r}"


def _table_fields(path: list[str]) -> list[str]:
    """The keys a table of config.toml may hold (``[]``: the top level)."""
    model: Any = ModelConfig
    for part in path:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
