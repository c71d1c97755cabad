"""The balancer's typed settings: what the Envoy bootstrap is rendered from.

Only what belongs to Envoy lives here. What the workers already define (the message size limit, the
drain time) comes from :class:`tensorgate.server.settings.Settings` through
:meth:`BalancerSettings.for_server`, so that the two never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tensorgate.server.settings import Settings

#: Slack above the workers' own message limit, so that a request just over it reaches the worker,
#: which answers with a clear RESOURCE_EXHAUSTED; Envoy only stops what is far too big.
REQUEST_LIMIT_SLACK_BYTES = 64 * 1024


class Endpoint(BaseModel):
    """One worker address (the local target)."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class OtlpCollector(BaseModel):
    """An OTLP/gRPC collector, from ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://host:4317``)."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int = Field(4317, ge=1, le=65535)

    @classmethod
    def parse(cls, url: str) -> Self:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ValueError(
                f"OTLP endpoint {url!r}: only plaintext gRPC (http://host:port) is supported"
            )
        if not parts.hostname:
            raise ValueError(f"OTLP endpoint {url!r} has no host")
        return cls(host=parts.hostname, port=parts.port or 4317)


class UpstreamTls(BaseModel):
    """mTLS from Envoy to the workers: the CA of the workers' certificates, Envoy's client pair."""

    model_config = ConfigDict(frozen=True)

    ca: Path
    cert: Path
    key: Path
    server_name: str = Field("tensorgate-worker", description="SNI and the name checked")


class JwtProvider(BaseModel):
    """JWTs verified by Envoy against a local JWKS file; a claim carries the tensorgate roles."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    audience: str
    jwks: Path
    roles_claim: str = Field("roles", description="claim with the roles: 'infer,admin' or a list")


class BalancerSettings(BaseSettings):
    """Envoy's part of the configuration. Env vars: ``TENSORGATE_BALANCER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="TENSORGATE_BALANCER_", extra="ignore", populate_by_name=True
    )

    # -- where the workers are
    target: Literal["local", "kubernetes"] = Field(
        "local", description="local: static endpoints; kubernetes: STRICT_DNS on a headless Service"
    )
    endpoints: list[Endpoint] = Field(default_factory=list, description="local target: the workers")
    service_dns: str = Field(
        "tensorgate-workers", description="kubernetes target: the workers' headless Service name"
    )
    service_port: int = Field(8001, ge=1, le=65535, description="kubernetes target: workers' port")
    dns_refresh_seconds: float = Field(5.0, gt=0, description="how often the Service is resolved")

    # -- Envoy's own sockets
    listen_host: str = Field("127.0.0.1", description="front door bind address; 0.0.0.0 in pods")
    port: int = Field(8000, ge=0, le=65535, description="the front door (gRPC over HTTP/2)")
    admin_port: int = Field(9901, ge=0, le=65535, description="admin interface, on 127.0.0.1 only")
    concurrency: int | None = Field(
        None, ge=1, description="Envoy worker threads; None: one per core"
    )

    # -- load balancing and health
    lb_policy: Literal["LEAST_REQUEST", "ROUND_ROBIN"] = "LEAST_REQUEST"
    health_check_interval_seconds: float = Field(1.0, gt=0, description="gRPC health check period")
    unhealthy_check_interval_seconds: float = Field(
        0.25, gt=0, description="health check period of a host that is down"
    )
    health_check_timeout_seconds: float = Field(1.0, gt=0)
    unhealthy_threshold: int = Field(2, ge=1, description="failed checks (network) to mark down")
    healthy_threshold: int = Field(1, ge=1, description="passed checks to mark a host up again")
    connect_timeout_seconds: float = Field(1.0, gt=0)

    # -- outlier detection: ejects a host that keeps failing between two health checks
    outlier_consecutive_5xx: int = Field(5, ge=1)
    outlier_consecutive_gateway_failure: int = Field(3, ge=1)
    outlier_interval_seconds: float = Field(1.0, gt=0)
    outlier_base_ejection_seconds: float = Field(2.0, gt=0)
    outlier_max_ejection_percent: int = Field(50, ge=0, le=100)

    # -- retries (inference is idempotent)
    num_retries: int = Field(2, ge=0, le=10)
    per_try_timeout_seconds: float = Field(30.0, gt=0)

    # -- limits and timeouts
    max_downstream_connections: int = Field(10_000, ge=1, description="callers' connections")
    max_connections: int = Field(1024, ge=1, description="circuit breaker: to the workers")
    max_pending_requests: int = Field(1024, ge=1)
    max_requests: int = Field(1024, ge=1)
    max_retries: int = Field(
        256, ge=1, description="concurrent retries; a dying worker resets many calls at once"
    )
    max_request_bytes: int = Field(64 * 1024 * 1024 + REQUEST_LIMIT_SLACK_BYTES, ge=1024)
    request_timeout_seconds: float = Field(
        60.0, gt=0, description="a call without grpc-timeout gets this"
    )
    max_grpc_timeout_seconds: float = Field(
        300.0, gt=0, description="a caller's grpc-timeout is honored up to this"
    )

    # -- security at the front door (docs/security.md)
    tls_cert: Path | None = Field(None, description="front door TLS certificate chain (PEM)")
    tls_key: Path | None = Field(None, description="front door TLS private key (PEM)")
    tls_client_ca: Path | None = Field(None, description="front door mTLS: the callers' CA")
    upstream_tls: UpstreamTls | None = Field(None, description="mTLS from Envoy to the workers")
    sds_dir: Path | None = Field(
        None, description="where the SDS files go; None: beside the bootstrap"
    )
    jwt: JwtProvider | None = Field(None, description="verify JWTs at the front door")
    rate_limit_rps: float | None = Field(
        None, gt=0, description="calls per second per client (address or token); None: no limit"
    )
    rate_limit_key: Literal["address", "token"] = Field(
        "address", description="what one client is for the rate limit"
    )
    rate_limit_burst_seconds: float = Field(
        1.0, gt=0, description="a client may burst this many seconds' worth of calls"
    )
    max_streams_per_connection: int = Field(
        1024, ge=1, description="concurrent gRPC calls on one caller connection"
    )
    max_heap_bytes: int = Field(
        1024 * 1024 * 1024, ge=64 * 1024 * 1024, description="Envoy sheds load near this heap size"
    )

    # -- observability
    access_log_path: str = Field("/dev/stdout", description="non-OK calls, one JSON line each")
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "TENSORGATE_BALANCER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description="OTLP/gRPC collector; when set, Envoy emits spans (W3C traceparent)",
    )
    tracing_service_name: str = "tensorgate-envoy"
    tracing_sampling_percent: float = Field(100.0, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.target == "local" and not self.endpoints:
            raise ValueError("the local target needs at least one endpoint")
        if self.otlp_endpoint:
            OtlpCollector.parse(self.otlp_endpoint)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        return self

    @property
    def collector(self) -> OtlpCollector | None:
        return OtlpCollector.parse(self.otlp_endpoint) if self.otlp_endpoint else None

    @classmethod
    def for_server(cls, server: Settings, **overrides: object) -> Self:
        """Balancer settings consistent with the workers' ``server`` settings.

        The request limit follows the workers' message limit, and the workers' drain must outlast one
        health-check period, or Envoy would still route to a worker that has stopped.
        """
        values: dict[str, object] = {
            "max_request_bytes": server.max_message_bytes + REQUEST_LIMIT_SLACK_BYTES,
            **overrides,
        }
        balancer = cls(**values)
        if server.drain_seconds <= balancer.health_check_interval_seconds:
            raise ValueError(
                f"drain_seconds ({server.drain_seconds}) must exceed the health-check interval "
                f"({balancer.health_check_interval_seconds} s): Envoy needs one check to see "
                "NOT_SERVING before the worker stops"
            )
        return balancer
