"""``tensorgate up``: N workers behind Envoy on one host, supervised until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tensorgate.balancer.envoy import EnvoyNotFound, envoy_binary
from tensorgate.balancer.ports import PortLayout, busy_ports
from tensorgate.balancer.security import StackSecurity
from tensorgate.balancer.settings import JwtProvider
from tensorgate.balancer.supervisor import StackConfig, Supervisor
from tensorgate.server.errors import RepositoryError
from tensorgate.server.flags import add_settings_flags, settings_from_flags
from tensorgate.server.repository import check_repository
from tensorgate.server.settings import usable_cores
from tensorgate.server.tls import TlsFileError

HELP = "start N workers behind Envoy (least-request, health checks, retries) and supervise them"
#: Worker settings that ``up`` decides itself: each worker's port follows the front door's; the
#: workers trust Envoy's roles header exactly when `up` verifies JWTs. The TLS settings given to
#: `up` are the front door's (Envoy's); the workers get TLS only with --tls-internal.
DECIDED_BY_UP = (
    "port",
    "workers",
    "metrics_port",
    "host",
    "host_workers",
    "trust_roles_header",
    "health_port",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("up", help=HELP, description=HELP)
    stack = parser.add_argument_group("the stack")
    stack.add_argument("--port", type=int, default=8000, help="the front door (Envoy) gRPC port")
    stack.add_argument(
        "--host",
        help="the front door's bind address (default 127.0.0.1); workers always bind 127.0.0.1",
    )
    stack.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin, on 127.0.0.1")
    stack.add_argument(
        "--metrics-port",
        type=int,
        default=9100,
        help="worker i serves /metrics on this + i; 0: off (default %(default)s)",
    )
    stack.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    add_settings_flags(
        parser.add_argument_group("worker settings, passed to every worker"),
        exclude=DECIDED_BY_UP,
    )
    front = parser.add_argument_group("front door (Envoy), docs/security.md")
    front.add_argument(
        "--tls-internal",
        action="store_true",
        help="mTLS from Envoy to the workers, with a CA made for this run (implied by --jwt-*)",
    )
    front.add_argument("--jwt-issuer", metavar="ISS", help="verify JWTs: the issuer (iss)")
    front.add_argument("--jwt-audience", metavar="AUD", help="verify JWTs: the audience (aud)")
    front.add_argument("--jwks", type=Path, metavar="FILE", help="verify JWTs: the keys (JWKS)")
    front.add_argument(
        "--jwt-roles-claim", default="roles", help="the claim with the roles (default: roles)"
    )
    front.add_argument(
        "--rate-limit",
        type=float,
        metavar="RPS",
        help="calls per second per client; beyond it RESOURCE_EXHAUSTED (default: no limit)",
    )
    front.add_argument(
        "--rate-limit-by",
        choices=("address", "token"),
        default="address",
        help="one client is one address (default) or one bearer token",
    )
    parser.set_defaults(func=handle)


def stack_security(args: argparse.Namespace) -> StackSecurity:
    jwt_flags = (args.jwt_issuer, args.jwt_audience, args.jwks)
    if any(jwt_flags) and not all(jwt_flags):
        raise ValueError("--jwt-issuer, --jwt-audience and --jwks go together")
    if args.rate_limit is not None and args.rate_limit <= 0:
        raise ValueError("--rate-limit must be positive")
    jwt = (
        JwtProvider(
            issuer=args.jwt_issuer,
            audience=args.jwt_audience,
            jwks=args.jwks,
            roles_claim=args.jwt_roles_claim,
        )
        if all(jwt_flags)
        else None
    )
    return StackSecurity(args.tls_internal, jwt, args.rate_limit, args.rate_limit_by)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_flags(
        args, exclude=DECIDED_BY_UP, port=args.port, metrics_port=args.metrics_port
    )
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        envoy_binary()
        layout = PortLayout(
            args.port,
            args.admin_port,
            args.metrics_port,
            usable_cores() if args.workers is None else args.workers,
        )
        config = StackConfig.build(
            settings.model_repository, layout, settings, args.host, stack_security(args)
        )
    except (ValueError, EnvoyNotFound, TlsFileError) as err:
        print(f"tensorgate up: {err}", file=sys.stderr)
        return 2
    try:
        check_repository(settings.model_repository)
    except RepositoryError as err:
        print(f"tensorgate up: {err.message}", file=sys.stderr)
        return 2
    busy = busy_ports(layout.all_ports())
    if busy:
        print(f"tensorgate up: ports already in use: {busy}", file=sys.stderr)
        return 1
    return Supervisor(config).run(on_ready=lambda: print(banner(config), flush=True))


def banner(config: StackConfig) -> str:
    """What the user sees once the stack is up."""
    layout = config.layout
    metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in layout.metrics_ports()) or "off"
    return "\n".join(
        [
            f"tensorgate is up: {layout.workers} workers behind Envoy",
            f"  gRPC front door   {config.balancer.listen_host}:{layout.port} ({front_door(config)})",
            f"  worker metrics    {metrics}",
            f"  Envoy stats       http://127.0.0.1:{layout.admin_port}/stats/prometheus",
            "Ctrl-C drains and stops (a second Ctrl-C kills at once); "
            "SIGHUP restarts the workers one at a time.",
        ]
    )


def front_door(config: StackConfig) -> str:
    """How the front door is protected, in a few words."""
    balancer = config.balancer
    parts = ["mTLS" if balancer.tls_client_ca else "TLS" if balancer.tls_cert else "plaintext"]
    if balancer.jwt is not None:
        parts.append("JWT")
    elif config.server.auth_tokens is not None:
        parts.append("tokens")
    if balancer.rate_limit_rps is not None:
        parts.append(f"{balancer.rate_limit_rps:g} calls/s per {balancer.rate_limit_key}")
    if config.security.tls_internal:
        parts.append("mTLS to the workers")
    return ", ".join(parts)
