"""The one typed settings object of a tensorgate server, read from flags and ``TENSORGATE_*`` env vars."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


def default_cache_dir() -> Path:
    """The user's cache directory (XDG), shared by every worker of this host."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tensorgate"


class Settings(BaseSettings):
    """Server settings. Flags override environment variables, which override these defaults."""

    model_config = SettingsConfigDict(env_prefix="TENSORGATE_", extra="ignore")

    # -- where and what to serve
    model_repository: Path = Field(
        Path("examples/models"), description="<repo>/<model>/<version>/model.onnx"
    )
    models: list[str] | None = Field(None, description="load only these models at start; None: all")
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 for containers")
    port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Prometheus /metrics port; 0 disables"
    )
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics")
    workers: int = Field(1, ge=1, description="worker processes; worker i serves port+i")
    strict_readiness: bool = Field(
        True,
        description="ServerReady and health '' are SERVING only when no model failed to load; "
        "--no-strict-readiness: when at least one model is ready",
    )
    model_control_mode: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="none: RepositoryModelLoad/Unload refused; explicit: allowed; poll: every "
        "worker watches the repository and loads what changed by itself",
    )
    repository_poll_seconds: float = Field(
        5.0, gt=0, description="poll mode: how often the repository is read"
    )

    # -- gRPC transport
    grpc_threads: int | None = Field(
        None, ge=1, description="handler pool size; None: sized from the batching settings"
    )
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="RPCs beyond this get RESOURCE_EXHAUSTED; None: sized from the pool"
    )
    max_message_bytes: int = Field(64 * MIB, ge=1024, description="largest request or response")

    # -- shutdown
    drain_seconds: float = Field(
        3.0, ge=0, description="NOT_SERVING before stopping, for balancers"
    )
    grace_seconds: float = Field(10.0, ge=0, description="time for requests in flight to finish")

    # -- ONNX Runtime defaults (a model's config.toml may override)
    intra_op_threads: int = Field(0, ge=0, description="0: one per core")
    inter_op_threads: int = Field(1, ge=0)
    warmup: bool = Field(True, description="run each model before it is ready")

    # -- response cache
    cache_enabled: bool = Field(True, description="--no-cache turns it off for the whole server")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="disk tier directory")
    cache_memory_bytes: int = Field(64 * MIB, ge=0, description="in-process LRU bound")
    cache_disk_bytes: int = Field(1024 * MIB, ge=0, description="diskcache size limit")
    cache_write_queue_bytes: int = Field(
        64 * MIB, ge=0, description="entries waiting for the disk beyond this are not written"
    )

    # -- fault injection, for tests of the balancer: off by default
    fault_latency_ms: float = Field(0.0, ge=0, description="added to every inference")
    fault_error_rate: float = Field(
        0.0, ge=0, le=1, description="share of inferences failing UNAVAILABLE"
    )

    log_level: str = Field("INFO")
