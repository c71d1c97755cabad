"""The security parts of the Envoy bootstrap (docs/security.md): TLS with certificates from SDS
files that Envoy watches, the JWT filter with the roles header it sets (after removing any copy a
caller sent), and the local rate limit. :mod:`tensorgate.balancer.envoy_config` puts them in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorgate.balancer.settings import BalancerSettings

# the header Envoy sets from the verified JWT's roles claim, after removing any copy a caller sent;
# workers read it only when started by `up` in JWT mode
from tensorgate.server.auth import ROLES_HEADER

_TYPE = "type.googleapis.com/envoy"
DOWNSTREAM_TLS_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SECRET_TYPE = f"{_TYPE}.extensions.transport_sockets.tls.v3.Secret"
JWT_AUTHN_TYPE = f"{_TYPE}.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
HEADER_MUTATION_TYPE = f"{_TYPE}.extensions.filters.http.header_mutation.v3.HeaderMutation"
LOCAL_RATELIMIT_TYPE = f"{_TYPE}.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

JWT_PROVIDER = "tensorgate"
#: SDS secrets, each in its own file (path_config_source), so that Envoy reloads them on change.
FRONT_DOOR_CERT = "front_door_cert"
FRONT_DOOR_CLIENT_CA = "front_door_client_ca"
WORKERS_CLIENT_CERT = "workers_client_cert"
WORKERS_CA = "workers_ca"


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
