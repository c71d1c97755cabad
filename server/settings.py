"""The one typed settings object of a tensorgate server, read from flags and ``TENSORGATE_*`` env vars."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
ENV_PREFIX = "TENSORGATE_"
#: A model's name is a directory of the repository: no separators, no leading dot.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_cache_dir() -> Path:
    """The user's cache directory (XDG), shared by every worker of this host."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tensorgate"


class Settings(BaseSettings):
    """Server settings. Flags override environment variables, which override these defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # -- where and what to serve
    model_repository: Path = Field(
        Path("examples/models"), description="<repo>/<model>/<version>/model.onnx"
    )
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="load only these models at start, comma-separated; unset: all"
    )
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 for containers")
    port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Prometheus /metrics port; 0 disables"
    )
    metrics_host: str = Field("127.0.0.1", description="bind address of /metrics")
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="plaintext port with grpc.health.v1 only, for Kubernetes probes when the "
        "gRPC port has TLS; worker i: this + i; 0: off",
    )
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
    host_workers: int = Field(
        1,
        ge=1,
        description="worker processes sharing this host's cores, set by `serve --workers` and "
        "`up` for their workers: intra_op_threads 0 divides the cores among them",
    )

    # -- gRPC transport
    grpc_core: Literal["aio", "threads"] = Field(
        "aio",
        description="aio: grpc.aio, one event loop, no thread per call; threads: grpcio's thread pool",
    )
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
    intra_op_threads: int = Field(
        0, ge=0, description="0: this worker's share of the cores (cores // host_workers, >= 1)"
    )
    inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime inter-op threads")
    warmup: bool = Field(True, description="run each model before it is ready")

    # -- response cache
    cache_enabled: bool = Field(
        True,
        description="the response cache; --no-cache turns it off for the whole server",
        json_schema_extra={"flag": "cache"},
    )
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

    # -- security (docs/security.md): all off by default, for local development
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain: serve TLS (1.2 or later)"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert; mode 0600")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA: require client certificates it signed (mTLS)"
    )
    tls_key_group_readable: bool = Field(
        False, description="accept a group-readable key (a Kubernetes Secret with fsGroup)"
    )
    auth_tokens: Path | None = Field(
        None, description="token file: '<sha256 hex> <role>[,<role>]' per line; reloaded on change"
    )
    trust_roles_header: bool = Field(
        False,
        description="take roles from Envoy's verified-JWT header (needs --tls-client-ca); "
        "`up --jwt-*` sets it",
    )
    reflection: bool = Field(True, description="gRPC reflection (needs a token when auth is on)")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="the log's threshold"
    )

    @field_validator("models", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``digits,mlp`` (a flag or a variable) or a JSON list, as older environments wrote it."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [name.strip() for name in text.split(",") if name.strip()]

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not MODEL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a model name (letters, digits, _ . -)")
        return value

    @field_validator("host", "metrics_host")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not HOST_NAME.fullmatch(value):
                raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return value

    @field_validator(
        "model_repository",
        "cache_dir",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "auth_tokens",
        mode="before",
    )
    @classmethod
    def _non_empty_path(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and not str(value).strip():
            raise ValueError("an empty path")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError(
                "--tls-cert and --tls-key (TENSORGATE_TLS_CERT, TENSORGATE_TLS_KEY) go together"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if self.trust_roles_header and self.tls_client_ca is None:
            raise ValueError(
                "--trust-roles-header needs --tls-client-ca: only a caller with a certificate "
                "of that CA (Envoy) may be trusted to set roles"
            )
        return self

    @property
    def worker_intra_op_threads(self) -> int:
        """ONNX Runtime's intra-op threads for one session of this worker: the setting, or when it
        is 0 this worker's share of the cores, so that N workers do not oversubscribe the host."""
        return self.intra_op_threads or max(1, usable_cores() // self.host_workers)
