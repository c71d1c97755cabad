"""What `tensorgate up` does for security: front door TLS and JWT to Envoy, tokens and the
internal mTLS hop to the workers. See docs/security.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tensorgate.balancer.local_ca import SERVER_NAME, Authority
from tensorgate.balancer.settings import JwtProvider, UpstreamTls
from tensorgate.server.settings import Settings
from tensorgate.server.tls import check_key_permissions


@dataclass(frozen=True)
class StackSecurity:
    """The security choices of one `tensorgate up` (all off: plaintext and open, as before)."""

    tls_internal: bool = False
    jwt: JwtProvider | None = None
    rate_limit_rps: float | None = None
    rate_limit_key: str = "address"

    def __post_init__(self) -> None:
        if self.jwt is not None and not self.tls_internal:
            # workers that trust Envoy's roles header must accept connections from Envoy only
            object.__setattr__(self, "tls_internal", True)

    def balancer_overrides(self, server: Settings) -> dict[str, object]:
        """BalancerSettings fields: the front door gets the TLS files given to `up`."""
        if server.tls_key is not None:
            check_key_permissions(server.tls_key, server.tls_key_group_readable)
        if server.auth_tokens is not None and self.jwt is not None:
            raise ValueError("--auth-tokens and --jwt-* are two ways to authenticate: choose one")
        return {
            "tls_cert": server.tls_cert,
            "tls_key": server.tls_key,
            "tls_client_ca": server.tls_client_ca,
            "jwt": self.jwt,
            "rate_limit_rps": self.rate_limit_rps,
            "rate_limit_key": self.rate_limit_key,
        }


@dataclass(frozen=True)
class InternalPki:
    """A CA made for one run, a worker certificate and Envoy's client certificate."""

    upstream: UpstreamTls
    worker_cert: Path
    worker_key: Path

    @classmethod
    def create(cls, directory: Path) -> InternalPki:
        authority = Authority(directory, name="tensorgate up internal CA")
        worker = authority.issue("worker", name=SERVER_NAME)
        envoy = authority.issue("envoy", server=False)
        upstream = UpstreamTls(ca=authority.ca, cert=envoy.cert, key=envoy.key)
        return cls(upstream, worker.cert, worker.key)


def worker_security_settings(
    server: Settings, security: StackSecurity, pki: InternalPki | None
) -> dict[str, object]:
    """A worker's security settings under `up`: the tokens it checks, whether it trusts Envoy's
    roles header, and TLS only for the internal hop (the TLS files given to `up` are Envoy's)."""
    return {
        "tls_cert": pki.worker_cert if pki else None,
        "tls_key": pki.worker_key if pki else None,
        "tls_client_ca": pki.upstream.ca if pki else None,
        "auth_tokens": server.auth_tokens.resolve() if server.auth_tokens else None,
        "trust_roles_header": security.jwt is not None,
        "health_port": 0,  # Envoy checks health over the worker's own (TLS) port
    }
