"""Who may call what: bearer tokens with roles, checked before any handler runs.

One plain function, :func:`authorize`, decides from the method name and the caller's roles; the
sync and asyncio interceptors below only read the metadata and abort. Tokens are stored as SHA-256
hashes (the ``--auth-tokens`` file), compared in constant time, and never logged.

Token file, one line per token (``#`` comments and blank lines allowed)::

    <sha256 hex of the token> <role>[,<role>...]

Roles: ``infer`` (inference, metadata, config, statistics, liveness and readiness) and ``admin``
(the repository calls). ``grpc.health.v1`` is open to everyone, for Kubernetes probes. Reflection
and any method not in the table need a known token, whatever its roles.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

log = logging.getLogger(__name__)

INFER = "infer"
ADMIN = "admin"
ROLES = frozenset({INFER, ADMIN})

SERVICE = "/inference.GRPCInferenceService/"
#: The role each RPC needs. Methods not listed need a known token (any role).
METHOD_ROLES: dict[str, str] = {
    **{
        SERVICE + name: INFER
        for name in (
            "ServerLive",
            "ServerReady",
            "ServerMetadata",
            "ModelReady",
            "ModelMetadata",
            "ModelConfig",
            "ModelStatistics",
            "ModelInfer",
            "ModelStreamInfer",
        )
    },
    **{
        SERVICE + name: ADMIN
        for name in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")
    },
}
#: Open to every caller: load balancers and Kubernetes probes carry no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

#: Set by Envoy from a verified JWT claim (``tensorgate up --jwt-*``); Envoy removes any copy a caller
#: sends. Workers read it only when ``trust_roles_header`` is on.
ROLES_HEADER = "x-tensorgate-roles"

MISSING_TOKEN = "authentication required: send 'authorization: Bearer <token>'"
UNKNOWN_TOKEN = "authentication failed: the token is not valid for this server"
#: How often, at most, the token file's modification is checked (on the request path, one stat).
RELOAD_CHECK_SECONDS = 1.0


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the line, never its contents."""


@dataclass(frozen=True)
class Denial:
    code: grpc.StatusCode
    message: str


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: what the token file holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token_lines(
    lines: Iterable[str], source: str
) -> tuple[tuple[bytes, frozenset[str]], ...]:
    """``(hash bytes, roles)`` per token line; :class:`TokenFileError` on a malformed line."""
    entries = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenFileError(
                f"{source}, line {number}: expected '<sha256 hex> <role>[,<role>]'"
            )
        digest, role_field = fields
        try:
            hashed = bytes.fromhex(digest)
        except ValueError:
            hashed = b""
        if len(hashed) != 32:
            raise TokenFileError(f"{source}, line {number}: the first field must be 64 hex digits")
        roles = frozenset(r for r in role_field.split(",") if r)
        unknown = sorted(roles - ROLES)
        if not roles or unknown:
            raise TokenFileError(
                f"{source}, line {number}: roles must be among {sorted(ROLES)}, got {unknown or '(none)'}"
            )
        entries.append((hashed, roles))
    return tuple(entries)


def _file_version(path: Path) -> tuple[int, int, int]:
    status = path.stat()  # follows symlinks: a Kubernetes Secret update swaps the link's target
    return status.st_ino, status.st_size, status.st_mtime_ns


class TokenFile:
    """The token table of one file, reloaded when the file changes (checked at most once a second).

    A file that becomes unreadable or malformed keeps the last good table, and the error is logged.
    Replace the file atomically (write a new file, then rename it), as Kubernetes does for Secrets.
    """

    def __init__(self, path: Path, check_seconds: float = RELOAD_CHECK_SECONDS) -> None:
        self.path = path
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._version = _file_version(path)
        self._entries = parse_token_lines(path.read_text().splitlines(), str(path))
        self._next_check = time.monotonic() + check_seconds
        log.info("auth: %d token(s) from %s", len(self._entries), path)

    def roles_of(self, token: str) -> frozenset[str] | None:
        """The roles of ``token``, or None when unknown. Every entry is compared, in constant time."""
        self._maybe_reload()
        presented = hashlib.sha256(token.encode()).digest()
        found: frozenset[str] | None = None
        for hashed, roles in self._entries:
            if hmac.compare_digest(presented, hashed):
                found = roles
        return found

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            self._next_check = now + self._check_seconds
            version = _file_version(self.path)
            if version == self._version:
                return
            entries = parse_token_lines(self.path.read_text().splitlines(), str(self.path))
            self._entries, self._version = entries, version
            log.info("auth: token file changed, %d token(s) now", len(entries))
        except (OSError, TokenFileError) as error:
            log.error("auth: keeping the previous tokens: %s", error)
        finally:
            self._lock.release()


def bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def header_roles(metadata: Iterable[tuple[str, Any]]) -> frozenset[str] | None:
    for key, value in metadata:
        if key == ROLES_HEADER and isinstance(value, str):
            return frozenset(r for r in value.replace(" ", ",").split(",") if r)
    return None


def authorize(method: str, roles: frozenset[str] | None, presented: bool) -> Denial | None:
    """None when ``method`` may run for a caller with ``roles`` (None: not authenticated)."""
    if method.startswith(OPEN_PREFIXES):
        return None
    if roles is None:
        return Denial(
            grpc.StatusCode.UNAUTHENTICATED, UNKNOWN_TOKEN if presented else MISSING_TOKEN
        )
    needed = METHOD_ROLES.get(method)
    if needed is not None and needed not in roles:
        return Denial(
            grpc.StatusCode.PERMISSION_DENIED,
            f"permission denied: {method.rsplit('/', 1)[-1]} needs the '{needed}' role",
        )
    return None


class Authenticator:
    """Finds the caller's roles: from a bearer token, or from Envoy's verified-JWT header."""

    def __init__(self, tokens: TokenFile | None, trust_roles_header: bool) -> None:
        self.tokens = tokens
        self.trust_roles_header = trust_roles_header

    def check(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Denial | None:
        if method.startswith(OPEN_PREFIXES):
            return None
        metadata = tuple(metadata or ())
        roles: frozenset[str] | None = None
        presented = False
        if self.trust_roles_header:
            # Envoy let the call through, so its JWT was valid; no header: the JWT had no roles
            roles = header_roles(metadata)
            presented = roles is not None
            if roles is None and self.tokens is None:
                roles = frozenset()
        if roles is None and self.tokens is not None:
            token = bearer_token(metadata)
            presented = presented or token is not None
            roles = self.tokens.roles_of(token) if token is not None else None
        return authorize(method, roles, presented)


def _denied_handler(handler: grpc.RpcMethodHandler | None, denial: Denial) -> Any:
    """A handler of the same shape that aborts with ``denial`` (the request is never parsed)."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(denial.code, denial.message)

    def abort_stream(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(denial.code, denial.message)
        yield  # pragma: no cover - abort raises

    if handler is not None and handler.response_streaming:
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(abort_stream)
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def _aio_denied_handler(handler: grpc.RpcMethodHandler | None, denial: Denial) -> Any:
    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(denial.code, denial.message)

    if handler is not None and handler.response_streaming:
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(abort)
        return grpc.unary_stream_rpc_method_handler(abort)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    """For ``grpc.server``: a denied call is answered before its handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        denial = self._authenticator.check(
            handler_call_details.method, handler_call_details.invocation_metadata
        )
        handler = continuation(handler_call_details)
        return handler if denial is None else _denied_handler(handler, denial)


class AioAuthInterceptor(grpc.aio.ServerInterceptor):
    """For ``grpc.aio.server``: the same decision, awaited."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        denial = self._authenticator.check(
            handler_call_details.method, handler_call_details.invocation_metadata
        )
        handler = await continuation(handler_call_details)
        return handler if denial is None else _aio_denied_handler(handler, denial)


def authenticator_from_settings(
    auth_tokens: Path | None, trust_roles_header: bool
) -> Authenticator | None:
    """None when the server is open (no token file, no JWT front door)."""
    if auth_tokens is None and not trust_roles_header:
        return None
    tokens = TokenFile(auth_tokens) if auth_tokens is not None else None
    return Authenticator(tokens, trust_roles_header)


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)
