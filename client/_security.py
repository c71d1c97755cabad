"""TLS settings and call metadata (bearer token, per-call headers) shared by both clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

PemSource = bytes | str | Path


def _pem(source: PemSource | None) -> bytes | None:
    """PEM bytes as given, or read from a file path."""
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the server: ``root_certificates`` (None: the system's roots) verify it; a client
    ``certificate_chain`` and ``private_key`` answer mTLS. PEM bytes, or paths to PEM files.

    ``server_name_override`` checks the server's certificate against this name instead of the
    target's host (for tests and for addressing a server by IP).
    """

    root_certificates: PemSource | None = None
    certificate_chain: PemSource | None = None
    private_key: PemSource | None = None
    server_name_override: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("TlsConfig: certificate_chain and private_key go together")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name_override is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]


Headers = Mapping[str, str] | Sequence[tuple[str, str]]


def base_metadata(
    metadata: Sequence[tuple[str, str]], token: str | None
) -> tuple[tuple[str, str], ...]:
    """What every call sends: the caller's metadata and, with a token, ``authorization: Bearer``."""
    if token is None:
        return tuple(metadata)
    return (*metadata, ("authorization", f"Bearer {token}"))


def with_headers(
    base: tuple[tuple[str, str], ...], headers: Headers | None
) -> tuple[tuple[str, str], ...]:
    """``base`` plus one call's ``headers`` (gRPC metadata keys are lower case)."""
    if not headers:
        return base
    items = headers.items() if isinstance(headers, Mapping) else headers
    return base + tuple((key.lower(), value) for key, value in items)
