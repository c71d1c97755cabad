"""The optional per-model configuration file, ``<repo>/<model>/config.toml``.

Every key is optional: inputs and outputs are read from the ONNX graph. See docs/model-repository.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class WarmupConfig(_Strict):
    """Runs before readiness turns true, so the first request pays no one-time cost."""

    count: int = Field(3, ge=0, description="runs per batch size")
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    file: str | None = Field(None, description=".npy of inputs, relative to the model dir")


class ModelConfig(_Strict):
    """Everything a model directory's config.toml may set."""

    platform: str = "onnxruntime_onnx"
    version: int | None = Field(None, description="serve this version instead of the newest")
    max_batch_size: int = Field(64, ge=0, description="0 disables batching")
    instances: int = Field(1, ge=1, description="ONNX Runtime sessions fed by one batcher")
    nondeterministic: bool = False
    dynamic_batching: DynamicBatchingConfig = Field(default_factory=DynamicBatchingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)

    @property
    def cache_enabled(self) -> bool:
        if self.cache.enabled is not None:
            return self.cache.enabled
        return not self.nondeterministic


def load_model_config(model_dir: Path) -> ModelConfig:
    """Reads ``config.toml`` from a model directory; defaults when there is none."""
    path = model_dir / CONFIG_FILE_NAME
    if not path.is_file():
        return ModelConfig()
    with path.open("rb") as handle:
        return ModelConfig.model_validate(tomllib.load(handle))
