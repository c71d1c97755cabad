"""Server TLS: certificate files checked, loaded, and reloaded when they change, without a restart.

gRPC asks :class:`ReloadingCertificates` for the configuration before every new TLS handshake
(``grpc.dynamic_ssl_server_credentials``); it answers a new one only when a file changed, so calls
on existing connections go on untouched and new connections get the new certificate. gRPC's core
negotiates TLS 1.2 or 1.3 only: TLS 1.2 is the minimum.
"""

from __future__ import annotations

import logging
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsFileError(ValueError):
    """A certificate or key file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and key, and, for mTLS, the CA that signs client certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    #: Kubernetes Secret volumes with ``fsGroup`` are group-readable (0440); this accepts that.
    allow_group_readable_key: bool = False

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def check_key_permissions(key: Path, allow_group_readable: bool = False) -> None:
    """Refuse a private key that other users (or, unless allowed, the group) may read."""
    mode = key.stat().st_mode
    if mode & stat.S_IROTH:
        raise TlsFileError(
            f"{key}: the private key is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {key}"
        )
    if mode & stat.S_IRGRP and not allow_group_readable:
        raise TlsFileError(
            f"{key}: the private key is readable by its group (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {key} (or set TENSORGATE_TLS_KEY_GROUP_READABLE=true for a "
            "Kubernetes Secret mounted with fsGroup)"
        )


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TlsFileError(f"cannot read the {what} {path}: {error.strerror}") from None
    if b"-----BEGIN" not in data:
        raise TlsFileError(f"{path}: the {what} is not PEM")
    return data


def _version(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    versions = []
    for path in paths:
        status = path.stat()  # follows symlinks: Kubernetes swaps a Secret's target directory
        versions.append((status.st_ino, status.st_size, status.st_mtime_ns))
    return tuple(versions)


class ReloadingCertificates:
    """The certificate configuration fetcher of gRPC's dynamic server credentials."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._version = _version(files.paths())
        self.initial = self._load()

    def _load(self) -> grpc.ServerCertificateConfiguration:
        check_key_permissions(self.files.key, self.files.allow_group_readable_key)
        chain = _read(self.files.cert, "certificate chain")
        key = _read(self.files.key, "private key")
        roots = _read(self.files.client_ca, "client CA") if self.files.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """None (keep the current one) unless a file changed; a bad new file keeps the old one."""
        with self._lock:
            try:
                version = _version(self.files.paths())
                if version == self._version:
                    return None
                configuration = self._load()
            except (OSError, TlsFileError) as error:
                log.error("tls: keeping the current certificate: %s", error)
                return None
            self._version = version
            log.info("tls: certificate files changed; new connections use them")
            return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that reload ``files``; with a client CA, clients must present a certificate."""
    fetcher = ReloadingCertificates(files)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=files.client_ca is not None
    )
