"""Render an Envoy v3 bootstrap (a plain dict, written as JSON) from :class:`BalancerSettings`.

One listener (HTTP/2, gRPC only) routes every call to one cluster of workers. Each piece of the
bootstrap is built by its own function, named after the part of Envoy's API it fills.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorgate.balancer.envoy_security import (
    downstream_tls,
    sds_files,
    security_filters,
    upstream_tls,
)
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
FIXED_HEAP_TYPE = f"{_TYPE}.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"

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
