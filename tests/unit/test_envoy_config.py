"""The Envoy bootstrap: every rendered variant passes `envoy --mode validate`, and says what we mean."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tensorgate.balancer.envoy import validate
from tensorgate.balancer.envoy_config import (
    COLLECTOR_CLUSTER,
    WORKERS_CLUSTER,
    render_bootstrap,
    write_bootstrap,
)
from tensorgate.balancer.settings import REQUEST_LIMIT_SLACK_BYTES, BalancerSettings, Endpoint
from tensorgate.server.settings import Settings

LOCAL = [Endpoint(port=8001), Endpoint(port=8002)]

VARIANTS: dict[str, dict[str, Any]] = {
    "local least-request": {"endpoints": LOCAL},
    "local round robin": {"endpoints": LOCAL, "lb_policy": "ROUND_ROBIN"},
    "kubernetes": {"target": "kubernetes", "listen_host": "0.0.0.0"},
    "tracing": {"endpoints": LOCAL, "otlp_endpoint": "http://otel-collector:4317"},
    "access log to a file": {"endpoints": LOCAL, "access_log_path": "/tmp/envoy-access.log"},
    "kubernetes with tracing": {"target": "kubernetes", "otlp_endpoint": "localhost:4317"},
}


@pytest.fixture(autouse=True)
def _no_balancer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's TENSORGATE_BALANCER_* and OTEL_* variables must not change what is tested."""
    for name in os.environ:
        if name.startswith(("TENSORGATE_BALANCER_", "OTEL_")):
            monkeypatch.delenv(name)


def cluster(bootstrap: dict[str, Any], name: str = WORKERS_CLUSTER) -> dict[str, Any]:
    return next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)


def hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = bootstrap["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    return hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_passes_envoy_validate_without_deprecated_fields(
    variant: str, tmp_path: Path
) -> None:
    settings = BalancerSettings(**VARIANTS[variant])
    assert ("tracing" in hcm(render_bootstrap(settings))) == ("otlp_endpoint" in VARIANTS[variant])
    path = write_bootstrap(settings, tmp_path / "envoy.json")
    result = validate(path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "OK" in output
    assert "deprecated" not in output.lower(), output


def test_validate_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    """The check above can fail: a bootstrap Envoy cannot load is reported as such."""
    bootstrap = render_bootstrap(BalancerSettings(endpoints=LOCAL))
    cluster(bootstrap)["load_balancing_policy"]["policies"][0]["typed_extension_config"]["name"] = (
        "envoy.load_balancing_policies.no_such_policy"
    )
    bootstrap["static_resources"]["clusters"][0]["health_checks"][0]["interval"] = "-1s"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(bootstrap))
    assert validate(path).returncode != 0


def test_workers_cluster_is_least_request_http2_health_checked_and_never_panics() -> None:
    workers = cluster(render_bootstrap(BalancerSettings(endpoints=LOCAL)))
    policy = workers["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.least_request"
    options = workers["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]
    assert workers["health_checks"][0]["grpc_health_check"] == {}
    assert workers["health_checks"][0]["interval"] == "1.000s"
    assert workers["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    assert workers["common_lb_config"]["update_merge_window"] == "0s"
    outlier = workers["outlier_detection"]
    assert outlier["consecutive_5xx"] >= 1 and outlier["consecutive_gateway_failure"] >= 1
    thresholds = workers["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_retries"] >= 64, "a dying worker resets many calls at once"
    hosts = workers["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [h["endpoint"]["address"]["socket_address"]["port_value"] for h in hosts] == [8001, 8002]


def test_round_robin_is_a_choice() -> None:
    workers = cluster(render_bootstrap(BalancerSettings(endpoints=LOCAL, lb_policy="ROUND_ROBIN")))
    policy = workers["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == "envoy.load_balancing_policies.round_robin"


def test_kubernetes_target_resolves_the_headless_service_with_strict_dns() -> None:
    settings = BalancerSettings(
        target="kubernetes", service_dns="workers.ns.svc", service_port=9001
    )
    workers = cluster(render_bootstrap(settings))
    assert workers["cluster_type"]["name"] == "envoy.cluster.dns"
    assert workers["cluster_type"]["typed_config"]["all_addresses_in_single_endpoint"] is False
    address = workers["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "workers.ns.svc", "port_value": 9001}


def test_retries_are_grpc_bounded_on_another_host_with_a_per_try_timeout() -> None:
    for route in routes(render_bootstrap(BalancerSettings(endpoints=LOCAL))):
        policy = route["route"]["retry_policy"]
        assert set(policy["retry_on"].split(",")) == {
            "unavailable",
            "reset",
            "connect-failure",
            "refused-stream",
        }
        assert 1 <= policy["num_retries"] <= 10
        assert policy["per_try_timeout"]
        predicates = [p["name"] for p in policy["retry_host_predicate"]]
        assert predicates == ["envoy.retry_host_predicates.previous_hosts"]


def test_the_callers_grpc_timeout_sets_the_deadline_and_only_grpc_is_routed() -> None:
    settings = BalancerSettings(endpoints=LOCAL, max_grpc_timeout_seconds=120)
    for route in routes(render_bootstrap(settings)):
        assert route["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "120.000s"}
        assert route["match"]["grpc"] == {}


def test_the_request_limit_follows_the_workers_and_spares_the_stream() -> None:
    server = Settings(max_message_bytes=8 * 1024 * 1024)
    bootstrap = render_bootstrap(BalancerSettings.for_server(server, endpoints=LOCAL))
    buffer = next(f for f in hcm(bootstrap)["http_filters"] if f["name"].endswith("buffer"))
    assert (
        buffer["typed_config"]["max_request_bytes"] == 8 * 1024 * 1024 + REQUEST_LIMIT_SLACK_BYTES
    )
    stream = next(r for r in routes(bootstrap) if "path" in r["match"])
    assert stream["match"]["path"] == "/inference.GRPCInferenceService/ModelStreamInfer"
    assert stream["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is True


def test_a_drain_shorter_than_a_health_check_is_refused() -> None:
    with pytest.raises(ValueError, match="must exceed the health-check interval"):
        BalancerSettings.for_server(Settings(drain_seconds=1.0), endpoints=LOCAL)


def test_the_admin_interface_stays_on_loopback() -> None:
    bootstrap = render_bootstrap(BalancerSettings(target="kubernetes", listen_host="0.0.0.0"))
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listener = bootstrap["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "0.0.0.0"


def test_only_calls_that_did_not_end_ok_are_logged() -> None:
    log = hcm(render_bootstrap(BalancerSettings(endpoints=LOCAL)))["access_log"][0]
    filters = log["filter"]["or_filter"]["filters"]
    assert {"grpc_status_filter": {"statuses": ["OK"], "exclude": True}} in filters
    assert log["typed_config"]["log_format"]["json_format"]["grpc_status"] == "%GRPC_STATUS%"


def test_tracing_is_on_only_with_an_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tracing" not in hcm(render_bootstrap(BalancerSettings(endpoints=LOCAL)))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.monitoring:4317")
    bootstrap = render_bootstrap(BalancerSettings(endpoints=LOCAL))
    provider = hcm(bootstrap)["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert (
        provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == COLLECTOR_CLUSTER
    )
    collector = cluster(bootstrap, COLLECTOR_CLUSTER)
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "collector.monitoring", "port_value": 4317}


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least one endpoint"):
        BalancerSettings()
    with pytest.raises(ValueError, match="only plaintext"):
        BalancerSettings(endpoints=LOCAL, otlp_endpoint="https://collector:4317")


# -- security at the front door (docs/security.md)

SECURITY_VARIANTS = (
    "tls",
    "mtls",
    "tls to the workers",
    "jwt",
    "rate limit by address",
    "rate limit by token",
    "everything",
)


def security_settings(variant: str, root: Path) -> BalancerSettings:
    from tensorgate.balancer.local_ca import Authority
    from tensorgate.balancer.settings import JwtProvider, UpstreamTls
    from tests.support.jwt import SigningKey

    authority = Authority(root / "pki")
    front, envoy = authority.issue("front"), authority.issue("envoy", server=False)
    jwt = JwtProvider(
        issuer="iss", audience="aud", jwks=SigningKey("k").write_jwks(root / "jwks.json")
    )
    options: dict[str, dict[str, Any]] = {
        "tls": {"tls_cert": front.cert, "tls_key": front.key},
        "mtls": {"tls_cert": front.cert, "tls_key": front.key, "tls_client_ca": authority.ca},
        "tls to the workers": {
            "upstream_tls": UpstreamTls(ca=authority.ca, cert=envoy.cert, key=envoy.key)
        },
        "jwt": {"jwt": jwt},
        "rate limit by address": {"rate_limit_rps": 50},
        "rate limit by token": {"rate_limit_rps": 50, "rate_limit_key": "token"},
    }
    chosen = options.get(variant) or {k: v for o in options.values() for k, v in o.items()}
    return BalancerSettings(endpoints=LOCAL, **chosen)


@pytest.mark.parametrize("variant", SECURITY_VARIANTS)
def test_security_variants_pass_envoy_validate(variant: str, tmp_path: Path) -> None:
    settings = security_settings(variant, tmp_path)
    result = validate(write_bootstrap(settings, tmp_path / "envoy.json"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deprecated" not in output.lower(), output


def test_tls_is_1_2_or_later_with_certificates_from_watched_sds_files(tmp_path: Path) -> None:
    settings = security_settings("everything", tmp_path)
    bootstrap = render_bootstrap(settings, tmp_path)
    listener = bootstrap["static_resources"]["listeners"][0]
    context = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert context["require_client_certificate"] is True
    common = context["common_tls_context"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert common["alpn_protocols"] == ["h2"]
    sds = common["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]
    assert sds["watched_directory"]["path"] == str(tmp_path.resolve())
    upstream = cluster(bootstrap)["transport_socket"]["typed_config"]
    assert (
        upstream["common_tls_context"]["validation_context_sds_secret_config"]["name"]
        == "workers_ca"
    )


def test_the_roles_header_is_stripped_before_the_jwt_filter_sets_it(tmp_path: Path) -> None:
    filters = [
        f["name"]
        for f in hcm(render_bootstrap(security_settings("everything", tmp_path)))["http_filters"]
    ]
    assert filters[:3] == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.jwt_authn",
    ]
    assert filters[-1] == "envoy.filters.http.router"
    # and without JWT, rate limit or TLS the request path is what it was
    plain = [
        f["name"] for f in hcm(render_bootstrap(BalancerSettings(endpoints=LOCAL)))["http_filters"]
    ]
    assert plain == ["envoy.filters.http.buffer", "envoy.filters.http.router"]


def test_rate_limited_calls_are_resource_exhausted_and_heap_is_capped() -> None:
    bootstrap = render_bootstrap(BalancerSettings(endpoints=LOCAL, rate_limit_rps=20))
    limit = hcm(bootstrap)["http_filters"][0]["typed_config"]
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["descriptors"][0]["token_bucket"]["tokens_per_fill"] == 20
    monitors = [m["name"] for m in bootstrap["overload_manager"]["resource_monitors"]]
    assert "envoy.resource_monitors.fixed_heap" in monitors
    actions = {a["name"] for a in bootstrap["overload_manager"]["actions"]}
    assert "envoy.overload_actions.stop_accepting_requests" in actions
