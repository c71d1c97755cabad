"""Helpers of the security tests: certificates, token files, TLS channels, waiting on a TLS server."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.balancer.local_ca import SERVER_NAME, Pair
from tensorgate.server.auth import hash_token, new_token
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Tokens:
    """A token file with one token per identity, and the tokens themselves."""

    path: Path
    infer: str
    admin: str
    both: str


def write_token_file(path: Path) -> Tokens:
    tokens = Tokens(path, new_token(), new_token(), new_token())
    write_atomically(
        path,
        "# tensorgate tokens\n"
        f"{hash_token(tokens.infer)} infer\n"
        f"{hash_token(tokens.admin)} admin\n"
        f"{hash_token(tokens.both)} infer,admin\n",
    )
    return tokens


def write_atomically(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write beside ``path``, then rename over it: readers see the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(text.encode() if isinstance(text, str) else text)
    os.replace(temporary, path)


def tls_channel(
    target: str, ca: Path, client: Pair | None = None, name: str = SERVER_NAME
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", name)]
    )


def tls_health(target: str, ca: Path, client: Pair | None = None) -> int | None:
    with tls_channel(target, ca, client) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return None
        return reply.status


def wait_until_tls_serving(
    target: str, ca: Path, process: subprocess.Popen[bytes], client: Pair | None = None
) -> None:
    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before serving")
        return tls_health(target, ca, client) == health_pb2.HealthCheckResponse.SERVING

    wait_until(serving, 60.0, f"{target} SERVING over TLS", interval=0.2)


def handshake(port: int, ca: Path, version: ssl.TLSVersion) -> str:
    """The TLS version a handshake offering only ``version`` ends with, or the server's refusal."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    with warnings.catch_warnings():  # offering TLS 1.1 is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    context.set_ciphers("ALL:@SECLEVEL=0")  # this client may offer TLS 1.1: the server decides
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=SERVER_NAME) as wrapped:
                return str(wrapped.version())
        except ssl.SSLError as error:
            return str(error.reason)
