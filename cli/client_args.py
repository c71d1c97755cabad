"""Flags shared by the sub-commands that call a running server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tensorgate.cli.usage import UsageError
from tensorgate.client import Client, TlsConfig

DEFAULT_TARGET = os.environ.get("TENSORGATE_TARGET", "127.0.0.1:8000")
TOKEN_ENV = "TENSORGATE_TOKEN"


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"host:port of the server or front door (default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="deadline of each call, seconds"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="TLS: the CA that signed the server's certificate",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="mTLS: client certificate")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="mTLS: client private key")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TLS with the system's root certificates (implied by --tls-ca/--tls-cert)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token (default: ${TOKEN_ENV}); prefer the variable, flags show in `ps`",
    )


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"{flag} {path}: {error.strerror}") from None


def client_from_args(args: argparse.Namespace) -> Client:
    """A client for ``--target`` with the TLS and token flags given."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls or args.tls_ca or args.tls_cert:
        tls = TlsConfig(
            root_certificates=_read(args.tls_ca, "--tls-ca"),
            certificate_chain=_read(args.tls_cert, "--tls-cert"),
            private_key=_read(args.tls_key, "--tls-key"),
        )
    token = args.token or os.environ.get(TOKEN_ENV) or None
    return Client(args.target, timeout=args.timeout, tls=tls, token=token)
