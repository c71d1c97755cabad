"""Render an Envoy v3 bootstrap (a plain dict, written as JSON) from :class:`BalancerSettings`.

One listener (HTTP/2, gRPC only) routes every call to one cluster of workers. Each piece of the
bootstrap is built by its own function, named after the part of Envoy's API it fills.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorgate.balancer.settings import BalancerSettings, Endpoint

WORKERS_CLUSTER = "tensorgate_workers"
COLLECTOR_CLUSTER = "opentelemetry_collector"
STREAM_INFER_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"

_TYPE = "type.googleapis.com/envoy"
HCM_TYPE = f"{_TYPE}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = f"{_TYPE}.extensions.filters.http.router.v3.Router"
BUFFER_TYPE = f"{_TYPE}.extensions.filters.http.buffer.v3.Buffer"
BUFFER_PER_ROUTE_TYPE = f"{_TYPE}.extensions.filters.http.buffer.v3.BufferPerRoute"
HTTP_PROTOCOL_OPTIONS_TYPE = f"{_TYPE}.extensions.upstreams.http.v3.HttpProtocolOptions"
STDOUT_LOG_TYPE = f"{_TYPE}.extensions.access_loggers.stream.v3.StdoutAccessLog"
FILE_LOG_TYPE = f"{_TYPE}.extensions.access_loggers.file.v3.FileAccessLog"
PREVIOUS_HOSTS_TYPE = f"{_TYPE}.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
LEAST_REQUEST_TYPE = f"{_TYPE}.extensions.load_balancing_policies.least_request.v3.LeastRequest"
DNS_CLUSTER_TYPE = f"{_TYPE}.extensions.clusters.dns.v3.DnsCluster"
DOWNSTREAM_CONNECTIONS_TYPE = (
    f"{_TYPE}.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
OTEL_TRACER_TYPE = f"{_TYPE}.config.trace.v3.OpenTelemetryConfig"
DOWNSTREAM_TLS_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SECRET_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.Secret"
JWT_AUTHN_TYPE = f"{_TYPE}.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
HEADER_MUTATION_TYPE = f"{_TYPE}.extensions.filters.http.header_mutation.v3.HeaderMutation"
LOCAL_RATELIMIT_TYPE = f"{_TYPE}.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
FIXED_HEAP_TYPE = f"{_TYPE}.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"

#: Set from the verified JWT's roles claim; any copy a caller sends is removed first. The workers
#: read it only when started by `up` in JWT mode (tensorgate.server.auth.ROLES_HEADER).
ROLES_HEADER = "x-tensorgate-roles"
JWT_PROVIDER = "tensorgate"
#: SDS secrets, each in its own file (path_config_source), so that Envoy reloads them on change.
FRONT_DOOR_CERT = "front_door_cert"
FRONT_DOOR_CLIENT_CA = "front_door_client_ca"
WORKERS_CLIENT_CERT = "workers_client_cert"
WORKERS_CA = "workers_ca"

GRPC_RESOURCE_EXHAUSTED = "8"

#: What the access log writes for a call that did not end OK (one JSON object a line).
ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "method": "%REQ(:PATH)%",
    "grpc_status": "%GRPC_STATUS%",
    "http_status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "upstream": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "duration_ms": "%DURATION%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
}


def seconds(value: float) -> str:
    """A protobuf Duration in its JSON form."""
    return f"{value:.3f}s"


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def render_bootstrap(settings: BalancerSettings, sds_dir: Path | None = None) -> dict[str, Any]:
    """The whole bootstrap for ``settings``; SDS secret files are looked for in ``sds_dir``
    (``settings.sds_dir``, else the current directory: :func:`write_bootstrap` says where)."""
    sds = sds_dir or settings.sds_dir or Path(".")
    clusters = [workers_cluster(settings, sds)]
    if settings.collector is not None:
        clusters.append(collector_cluster(settings))
    return {
        "node": {"id": "tensorgate-balancer", "cluster": "tensorgate"},
        "admin": {"address": socket_address("127.0.0.1", settings.admin_port)},
        "static_resources": {"listeners": [listener(settings, sds)], "clusters": clusters},
        "overload_manager": overload_manager(settings),
    }


HEAP_MONITOR = "envoy.resource_monitors.fixed_heap"
#: What Envoy does as its heap nears ``max_heap_bytes``: give memory back, then close idle
#: keep-alive connections, then refuse new requests (HTTP 503, UNAVAILABLE to gRPC callers).
HEAP_ACTIONS = (
    ("envoy.overload_actions.shrink_heap", 0.90),
    ("envoy.overload_actions.disable_http_keepalive", 0.92),
    ("envoy.overload_actions.stop_accepting_requests", 0.95),
)


def overload_manager(settings: BalancerSettings) -> dict[str, Any]:
    """A cap on downstream connections, and load shedding before the heap runs out."""
    return {
        "refresh_interval": "0.250s",
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": DOWNSTREAM_CONNECTIONS_TYPE,
                    "max_active_downstream_connections": settings.max_downstream_connections,
                },
            },
            {
                "name": HEAP_MONITOR,
                "typed_config": {
                    "@type": FIXED_HEAP_TYPE,
                    "max_heap_size_bytes": settings.max_heap_bytes,
                },
            },
        ],
        "actions": [
            {"name": action, "triggers": [{"name": HEAP_MONITOR, "threshold": {"value": value}}]}
            for action, value in HEAP_ACTIONS
        ],
    }


def write_bootstrap(settings: BalancerSettings, path: Path) -> Path:
    """Write the bootstrap as JSON (which Envoy reads from a ``.json`` path) and return the path;
    the SDS files of its certificates go to ``settings.sds_dir``, else beside it."""
    sds_dir = settings.sds_dir or path.parent
    for name, content in sds_files(settings).items():
        (sds_dir / name).write_text(json.dumps(content, indent=2) + "\n")
    path.write_text(json.dumps(render_bootstrap(settings, sds_dir), indent=2) + "\n")
    return path


# -- TLS: certificates through SDS from files, so that Envoy reloads them when they change


def sds_files(settings: BalancerSettings) -> dict[str, dict[str, Any]]:
    """File name -> SDS DiscoveryResponse, one per secret the bootstrap refers to."""
    secrets: dict[str, dict[str, Any]] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        secrets[FRONT_DOOR_CERT] = certificate_secret(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        secrets[FRONT_DOOR_CLIENT_CA] = ca_secret(settings.tls_client_ca)
    if settings.upstream_tls is not None:
        upstream = settings.upstream_tls
        secrets[WORKERS_CLIENT_CERT] = certificate_secret(upstream.cert, upstream.key)
        secrets[WORKERS_CA] = ca_secret(upstream.ca)
    return {
        f"{name}.json": {"resources": [{"@type": SECRET_TYPE, "name": name, **secret}]}
        for name, secret in secrets.items()
    }


def certificate_secret(cert: Path, key: Path) -> dict[str, Any]:
    """A certificate and key from files; Envoy re-reads them when their directory sees a file
    moved in (how Kubernetes updates a Secret, and how to replace them by hand: write, then mv)."""
    return {
        "tls_certificate": {
            "certificate_chain": {"filename": str(cert.resolve())},
            "private_key": {"filename": str(key.resolve())},
            "watched_directory": {"path": str(cert.resolve().parent)},
        }
    }


def ca_secret(ca: Path) -> dict[str, Any]:
    return {
        "validation_context": {
            "trusted_ca": {"filename": str(ca.resolve())},
            "watched_directory": {"path": str(ca.resolve().parent)},
        }
    }


def sds_reference(name: str, sds_dir: Path) -> dict[str, Any]:
    path = (sds_dir / f"{name}.json").resolve()
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {
                "path": str(path),
                "watched_directory": {"path": str(path.parent)},
            },
            "resource_api_version": "V3",
        },
    }


def common_tls_context(certificate: str, validation: str | None, sds_dir: Path) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "alpn_protocols": ["h2"],
        "tls_certificate_sds_secret_configs": [sds_reference(certificate, sds_dir)],
    }
    if validation is not None:
        context["validation_context_sds_secret_config"] = sds_reference(validation, sds_dir)
    return context


def downstream_tls(settings: BalancerSettings, sds_dir: Path) -> dict[str, Any] | None:
    """TLS at the front door (mTLS with a client CA), or None for plaintext."""
    if settings.tls_cert is None:
        return None
    mtls = settings.tls_client_ca is not None
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "common_tls_context": common_tls_context(
                FRONT_DOOR_CERT, FRONT_DOOR_CLIENT_CA if mtls else None, sds_dir
            ),
            "require_client_certificate": mtls,
        },
    }


def upstream_tls(settings: BalancerSettings, sds_dir: Path) -> dict[str, Any] | None:
    """mTLS to the workers: Envoy presents its client certificate and checks theirs."""
    if settings.upstream_tls is None:
        return None
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "common_tls_context": common_tls_context(WORKERS_CLIENT_CERT, WORKERS_CA, sds_dir),
            "sni": settings.upstream_tls.server_name,
        },
    }


def listener(settings: BalancerSettings, sds_dir: Path = Path(".")) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(settings),
            }
        ]
    }
    transport = downstream_tls(settings, sds_dir)
    if transport is not None:
        chain["transport_socket"] = transport
    return {
        "name": "grpc_ingress",
        "address": socket_address(settings.listen_host, settings.port),
        "filter_chains": [chain],
    }


def http_connection_manager(settings: BalancerSettings) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "grpc_ingress",
        "codec_type": "HTTP2",
        "http2_protocol_options": {"max_concurrent_streams": settings.max_streams_per_connection},
        # header names with underscores can alias others behind some proxies: refuse them
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": route_config(settings),
        "http_filters": [
            *security_filters(settings),
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": BUFFER_TYPE,
                    "max_request_bytes": settings.max_request_bytes,
                },
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
        "access_log": [access_log(settings)],
        "local_reply_config": local_reply_config(settings),
    }
    if settings.collector is not None:
        hcm["tracing"] = tracing(settings)
    return hcm


def security_filters(settings: BalancerSettings) -> list[dict[str, Any]]:
    """In order: strip a caller's roles header, rate limit, verify the JWT (which sets it)."""
    filters = []
    if settings.jwt is not None:
        filters.append(strip_roles_header())
    if settings.rate_limit_rps is not None:
        filters.append(local_rate_limit(settings))
    if settings.jwt is not None:
        filters.append(jwt_authn(settings))
    return filters


def strip_roles_header() -> dict[str, Any]:
    """A caller must never choose its own roles: any roles header it sends is removed."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": HEADER_MUTATION_TYPE,
            "mutations": {"request_mutations": [{"remove": ROLES_HEADER}]},
        },
    }


def jwt_authn(settings: BalancerSettings) -> dict[str, Any]:
    """JWTs from ``authorization: Bearer`` verified against a local JWKS (signature, issuer,
    audience, expiry); the roles claim becomes the roles header; health checks need no JWT."""
    jwt = settings.jwt
    assert jwt is not None
    provider = {
        "issuer": jwt.issuer,
        "audiences": [jwt.audience],
        "local_jwks": {"filename": str(jwt.jwks.resolve())},
        "forward": False,  # the workers need the roles, not the token
        "claim_to_headers": [{"header_name": ROLES_HEADER, "claim_name": jwt.roles_claim}],
        "clock_skew_seconds": 30,
    }
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": {JWT_PROVIDER: provider},
            "rules": [
                {"match": {"prefix": "/grpc.health.v1.Health/"}},
                {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}},
            ],
        },
    }


def local_rate_limit(settings: BalancerSettings) -> dict[str, Any]:
    """A token bucket per client (its address, or its bearer token), refilled ``rate_limit_rps``
    times a second; beyond it, RESOURCE_EXHAUSTED. Calls without a token share one bucket."""
    rps = settings.rate_limit_rps
    assert rps is not None
    per_second = max(1, round(rps))
    bucket = {
        "max_tokens": max(1, round(rps * settings.rate_limit_burst_seconds)),
        "tokens_per_fill": per_second,
        "fill_interval": "1s",
    }
    if settings.rate_limit_key == "address":
        key, action = "remote_address", {"remote_address": {}}
    else:
        key = "token"
        action = {
            "request_headers": {
                "header_name": "authorization",
                "descriptor_key": key,
                "skip_if_absent": True,
            }
        }
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": LOCAL_RATELIMIT_TYPE,
            "stat_prefix": "front_door_rate_limit",
            "token_bucket": bucket,
            "filter_enabled": {**always, "runtime_key": "tensorgate.rate_limit_enabled"},
            "filter_enforced": {**always, "runtime_key": "tensorgate.rate_limit_enforced"},
            "rate_limits": [{"actions": [action]}],
            # an entry without a value is a wildcard: one bucket per distinct value seen
            "descriptors": [{"entries": [{"key": key}], "token_bucket": bucket}],
            "max_dynamic_descriptors": 100_000,
            # the filter-wide bucket is only for calls with no descriptor (no token), not for all
            "always_consume_default_token_bucket": False,
            "rate_limited_as_resource_exhausted": True,
        },
    }


def local_reply_config(settings: BalancerSettings) -> dict[str, Any]:
    """A request over the size limit is RESOURCE_EXHAUSTED with a clear message, as the workers
    answer it, not the UNKNOWN Envoy derives from HTTP 413."""
    too_large = {
        "comparison": {
            "op": "EQ",
            "value": {"default_value": 413, "runtime_key": "tensorgate.payload_too_large"},
        }
    }
    mappers = []
    if settings.rate_limit_rps is not None:
        mappers.append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {
                                "default_value": 429,
                                "runtime_key": "tensorgate.rate_limited",
                            },
                        }
                    }
                },
                "body": {
                    "inline_string": f"rate limit: more than {settings.rate_limit_rps:g} calls "
                    f"per second from this client ({settings.rate_limit_key}); retry later"
                },
            }
        )
    return {
        "mappers": [
            *mappers,
            {
                "filter": {"status_code_filter": too_large},
                "headers_to_add": [
                    {
                        "header": {"key": "grpc-status", "value": GRPC_RESOURCE_EXHAUSTED},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "body": {
                    "inline_string": f"request larger than {settings.max_request_bytes} bytes "
                    "(the balancer's limit)"
                },
            },
        ]
    }


def route_config(settings: BalancerSettings) -> dict[str, Any]:
    """Every gRPC call goes to the workers; the streaming call is exempt from request buffering."""
    stream_route = {
        "match": {"path": STREAM_INFER_PATH, "grpc": {}},
        "route": route_action(settings),
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {"@type": BUFFER_PER_ROUTE_TYPE, "disabled": True}
        },
    }
    unary_route = {"match": {"prefix": "/", "grpc": {}}, "route": route_action(settings)}
    return {
        "name": "grpc_routes",
        "virtual_hosts": [
            {"name": "workers", "domains": ["*"], "routes": [stream_route, unary_route]}
        ],
    }


def route_action(settings: BalancerSettings) -> dict[str, Any]:
    """Timeouts: the caller's ``grpc-timeout`` wins (capped), else ``request_timeout_seconds``."""
    return {
        "cluster": WORKERS_CLUSTER,
        "timeout": seconds(settings.request_timeout_seconds),
        "max_stream_duration": {
            "grpc_timeout_header_max": seconds(settings.max_grpc_timeout_seconds)
        },
        "retry_policy": retry_policy(settings),
    }


def retry_policy(settings: BalancerSettings) -> dict[str, Any]:
    """Retry what never reached a model or was refused by a draining worker, on another host."""
    return {
        "retry_on": "unavailable,reset,connect-failure,refused-stream",
        "num_retries": settings.num_retries,
        "per_try_timeout": seconds(settings.per_try_timeout_seconds),
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": PREVIOUS_HOSTS_TYPE},
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.010s", "max_interval": "0.100s"},
    }


def access_log(settings: BalancerSettings) -> dict[str, Any]:
    """One JSON line per call that did not end OK, or that Envoy itself flagged (no upstream, …)."""
    log_format = {"json_format": ACCESS_LOG_FORMAT}
    if settings.access_log_path == "/dev/stdout":
        typed_config: dict[str, Any] = {"@type": STDOUT_LOG_TYPE, "log_format": log_format}
    else:
        typed_config = {
            "@type": FILE_LOG_TYPE,
            "path": settings.access_log_path,
            "log_format": log_format,
        }
    return {
        "name": "envoy.access_loggers.stdout"
        if settings.access_log_path == "/dev/stdout"
        else "envoy.access_loggers.file",
        "filter": {
            "or_filter": {
                "filters": [
                    {"grpc_status_filter": {"statuses": ["OK"], "exclude": True}},
                    {"response_flag_filter": {}},
                ]
            }
        },
        "typed_config": typed_config,
    }


def tracing(settings: BalancerSettings) -> dict[str, Any]:
    """Spans to an OTLP/gRPC collector; Envoy's OpenTelemetry tracer propagates W3C traceparent."""
    return {
        "random_sampling": {"value": settings.tracing_sampling_percent},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": OTEL_TRACER_TYPE,
                "grpc_service": {
                    "envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                    "timeout": "0.250s",
                },
                "service_name": settings.tracing_service_name,
            },
        },
    }


def workers_cluster(settings: BalancerSettings, sds_dir: Path = Path(".")) -> dict[str, Any]:
    if settings.target == "local":
        discovery: dict[str, Any] = {"type": "STATIC"}
        endpoints = settings.endpoints
    else:
        discovery = dns_discovery(settings.dns_refresh_seconds)
        endpoints = [Endpoint(host=settings.service_dns, port=settings.service_port)]
    transport = upstream_tls(settings, sds_dir)
    return {
        "name": WORKERS_CLUSTER,
        **discovery,
        **({"transport_socket": transport} if transport is not None else {}),
        "connect_timeout": seconds(settings.connect_timeout_seconds),
        "load_balancing_policy": load_balancing_policy(settings),
        "typed_extension_protocol_options": http2_upstream(),
        "load_assignment": {
            "cluster_name": WORKERS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": socket_address(e.host, e.port)}} for e in endpoints
                    ]
                }
            ],
        },
        "health_checks": [health_check(settings)],
        "outlier_detection": outlier_detection(settings),
        "circuit_breakers": circuit_breakers(settings),
        "common_lb_config": {
            # Without this, Envoy spreads calls over every host, dead ones included, once half are down.
            "healthy_panic_threshold": {"value": 0},
            # Envoy's threads see a health change at once, not merged over a 1 s window: a draining
            # worker stops getting calls one health check after NOT_SERVING, a new one starts at once.
            "update_merge_window": "0s",
        },
    }


def dns_discovery(refresh_seconds: float) -> dict[str, Any]:
    """STRICT_DNS through the DNS cluster extension: every address the name resolves to is a host."""
    return {
        "cluster_type": {
            "name": "envoy.cluster.dns",
            "typed_config": {
                "@type": DNS_CLUSTER_TYPE,
                "dns_refresh_rate": seconds(refresh_seconds),
                "dns_lookup_family": "V4_ONLY",
                "all_addresses_in_single_endpoint": False,
            },
        }
    }


def load_balancing_policy(settings: BalancerSettings) -> dict[str, Any]:
    if settings.lb_policy == "ROUND_ROBIN":
        name = "envoy.load_balancing_policies.round_robin"
        policy_type = f"{_TYPE}.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
        typed_config: dict[str, Any] = {"@type": policy_type}
    else:
        name = "envoy.load_balancing_policies.least_request"
        typed_config = {"@type": LEAST_REQUEST_TYPE, "choice_count": 2}
    return {"policies": [{"typed_extension_config": {"name": name, "typed_config": typed_config}}]}


def http2_upstream() -> dict[str, Any]:
    """Workers speak gRPC, so HTTP/2 upstream, said explicitly rather than left to detection."""
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
            "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1024}},
        }
    }


def health_check(settings: BalancerSettings) -> dict[str, Any]:
    """``grpc.health.v1.Health/Check`` with service "": a NOT_SERVING answer marks the host down."""
    return {
        "timeout": seconds(settings.health_check_timeout_seconds),
        "interval": seconds(settings.health_check_interval_seconds),
        "unhealthy_threshold": settings.unhealthy_threshold,
        "healthy_threshold": settings.healthy_threshold,
        "no_traffic_interval": seconds(settings.health_check_interval_seconds),
        # a host that is down is checked more often, so a restarted worker gets calls sooner
        "unhealthy_interval": seconds(settings.unhealthy_check_interval_seconds),
        "reuse_connection": True,
        "grpc_health_check": {},
    }


def outlier_detection(settings: BalancerSettings) -> dict[str, Any]:
    """Eject a host after consecutive 5xx or gateway failures (reset, refused, unreachable)."""
    return {
        "consecutive_5xx": settings.outlier_consecutive_5xx,
        "consecutive_gateway_failure": settings.outlier_consecutive_gateway_failure,
        "enforcing_consecutive_5xx": 100,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": seconds(settings.outlier_interval_seconds),
        "base_ejection_time": seconds(settings.outlier_base_ejection_seconds),
        "max_ejection_percent": settings.outlier_max_ejection_percent,
        "successful_active_health_check_uneject_host": True,
    }


def circuit_breakers(settings: BalancerSettings) -> dict[str, Any]:
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": settings.max_connections,
                "max_pending_requests": settings.max_pending_requests,
                "max_requests": settings.max_requests,
                "max_retries": settings.max_retries,
            }
        ]
    }


def collector_cluster(settings: BalancerSettings) -> dict[str, Any]:
    collector = settings.collector
    assert collector is not None
    return {
        "name": COLLECTOR_CLUSTER,
        **dns_discovery(settings.dns_refresh_seconds),
        "connect_timeout": seconds(settings.connect_timeout_seconds),
        "typed_extension_protocol_options": http2_upstream(),
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": socket_address(collector.host, collector.port)}}
                    ]
                }
            ],
        },
    }
