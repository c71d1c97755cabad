"""``tensorgate health``: one grpc.health.v1 Check; exit 0 when SERVING, 1 otherwise.

Meant for probes and the image's HEALTHCHECK: it imports only grpcio and the health stubs (both in
the light client's dependencies, through ``probes.health_status``), and the call is bounded by
``--timeout``.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2

from tensorgate.cli.usage import UsageError
from tensorgate.tools.probes import health_status

EXIT_SERVING, EXIT_NOT_SERVING = 0, 1


def handle(args: argparse.Namespace) -> int:
    target = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    credentials, options = tls_of(args)
    status = health_status(target, args.service, args.timeout, credentials, options)
    if status is None:
        answer = f"no status within {args.timeout:g} s (not listening, or unknown service)"
    else:
        answer = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    sys.stderr.write(f"{target} service {args.service!r}: {answer}\n")
    return EXIT_SERVING if status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING


def tls_of(
    args: argparse.Namespace,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """TLS credentials from the --tls-* flags (none: plaintext), and the name to verify."""
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None, []
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from error

    credentials = grpc.ssl_channel_credentials(
        read(args.tls_ca), read(args.tls_key), read(args.tls_cert)
    )
    options = (
        [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    )
    return credentials, options


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "health",
        help="ask a worker's grpc.health.v1 service; exit 0 when SERVING, 1 otherwise",
        description=__doc__,
    )
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument(
        "--service", default="", help='health service: "" is the whole server, or a model name'
    )
    parser.add_argument(
        "--timeout", type=positive, default=3.0, help="deadline of the check, seconds (default 3)"
    )
    tls = parser.add_argument_group("TLS (a worker serving with --tls-cert)")
    tls.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the server with")
    tls.add_argument("--tls-cert", metavar="FILE", help="client certificate, for mTLS")
    tls.add_argument("--tls-key", metavar="FILE", help="client private key, for mTLS")
    tls.add_argument("--tls-server-name", metavar="NAME", help="name to verify instead of --host's")
    parser.set_defaults(func=handle)
