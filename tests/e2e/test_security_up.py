"""`tensorgate up` with its security on: TLS at Envoy's front door, mTLS to the workers, tokens
checked by the workers, the rate limit, certificate and token reloads, and JWTs verified by Envoy.

Everything is real: the Envoy binary, `tensorgate serve` workers, TLS handshakes on 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tensorgate.balancer.local_ca import Authority, Pair
from tensorgate.client import Client, InferenceServerError, RetryPolicy, TlsConfig
from tensorgate.server.auth import ROLES_HEADER, hash_token, new_token
from tests.e2e.balancer_fixtures import UpProcess, tensorgate_up
from tests.support.jwt import SigningKey, claims
from tests.support.security import handshake, tls_channel, write_atomically
from tests.support.waiting import wait_until

PIXELS = np.zeros((1, 64), np.float32)
NO_RETRY = RetryPolicy(max_attempts=1)
RATE = 5
ISSUER = "https://idp.example.test"
AUDIENCE = "tensorgate"


@dataclass
class TlsStack:
    up: UpProcess
    authority: Authority
    cert: Pair
    tokens_path: Path
    infer: str
    admin: str
    limited: str

    def client(self, token: str | None, **kwargs: object) -> Client:
        tls = TlsConfig(root_certificates=self.authority.ca)
        return Client(self.up.target, tls=tls, token=token, timeout=20, retry=NO_RETRY, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    root = tmp_path_factory.mktemp("up_tls")
    authority = Authority(root / "pki")
    issued = authority.issue("front")
    # the served files live in their own directory, replaced by rename as Kubernetes does
    served = Pair(root / "served" / "tls.crt", root / "served" / "tls.key")
    served.cert.parent.mkdir()
    write_atomically(served.cert, issued.cert_pem, 0o644)
    write_atomically(served.key, issued.key_pem)
    infer, admin, limited = new_token(), new_token(), new_token()
    tokens_path = root / "tokens"
    write_atomically(
        tokens_path,
        f"{hash_token(infer)} infer\n{hash_token(admin)} admin\n{hash_token(limited)} infer\n",
    )
    args = [
        "--tls-cert", str(served.cert), "--tls-key", str(served.key),
        "--auth-tokens", str(tokens_path), "--tls-internal",
        "--rate-limit", str(RATE), "--rate-limit-by", "token",
    ]  # fmt: skip
    with tensorgate_up(root, workers=1, args=args) as up:
        yield TlsStack(up, authority, served, tokens_path, infer, admin, limited)


def test_the_banner_says_how_the_front_door_is_protected(tls_stack: TlsStack) -> None:
    assert f"(TLS, tokens, {RATE} calls/s per token, mTLS to the workers)" in tls_stack.up.stdout()


def test_tls_front_door_tokens_and_roles(tls_stack: TlsStack) -> None:
    with tls_stack.client(tls_stack.infer) as client:
        assert client.infer("digits", {"pixels": PIXELS})["label"].shape == (1,)
        with pytest.raises(InferenceServerError) as denied:
            client.unload("digits")
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with tls_stack.client(None) as client, pytest.raises(InferenceServerError) as anonymous:
        client.model_metadata("digits")
    assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    with tls_stack.client(tls_stack.admin) as client:
        assert "digits" in {m.name for m in client.repository_index()}


def test_the_front_door_refuses_tls_1_1(tls_stack: TlsStack) -> None:
    ca, port = tls_stack.authority.ca, tls_stack.up.layout.port
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(port, ca, ssl.TLSVersion.TLSv1_1) in (
        "UNEXPECTED_EOF_WHILE_READING",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
    )


def test_plaintext_to_the_front_door_fails(tls_stack: TlsStack) -> None:
    with (
        Client(tls_stack.up.target, token=tls_stack.infer, timeout=5, retry=NO_RETRY) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_health_through_envoy_needs_no_token(tls_stack: TlsStack) -> None:
    with tls_channel(tls_stack.up.target, tls_stack.authority.ca, name="localhost") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_workers_accept_only_envoys_certificate(tls_stack: TlsStack) -> None:
    """Behind `up --tls-internal`, a caller that goes around Envoy to a worker gets nowhere:
    neither in plaintext nor with TLS but without the run's client certificate."""
    worker = f"127.0.0.1:{tls_stack.up.layout.worker_port(0)}"
    with (
        Client(worker, token=tls_stack.admin, timeout=5, retry=NO_RETRY) as client,
        pytest.raises(InferenceServerError) as plaintext,
    ):
        client.live()
    assert plaintext.value.code == grpc.StatusCode.UNAVAILABLE
    assert tls_without_client_certificate(tls_stack.up.layout.worker_port(0)) == "refused"


def tls_without_client_certificate(port: int) -> str:
    """'refused' when a TLS caller without a client certificate gets no HTTP/2 answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as wrapped,
        ):
            wrapped.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            # TLS 1.3 reports the missing certificate after the handshake: an alert or EOF
            return "refused" if wrapped.recv(9) == b"" else "answered"
    except (ssl.SSLError, OSError):
        return "refused"


def test_the_rate_limit_answers_resource_exhausted_per_token(tls_stack: TlsStack) -> None:
    outcomes = []
    with tls_stack.client(tls_stack.limited) as client:
        for _ in range(4 * RATE):
            try:
                client.live()
                outcomes.append("OK")
            except InferenceServerError as error:
                outcomes.append(error.code.name)
                message = error.message
    assert outcomes[0] == "OK"
    assert outcomes.count("RESOURCE_EXHAUSTED") >= RATE
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"}
    assert (
        message
        == f"rate limit: more than {RATE} calls per second from this client (token); retry later"
    )
    # another token has a bucket of its own
    with tls_stack.client(tls_stack.infer) as client:
        assert client.live() is True


def served_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        certificate = wrapped.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


class Caller:
    """Calls on a fresh connection (so each sees the current certificate) about 3 times a second,
    under the rate limit of its token, until stopped; keeps every failure."""

    def __init__(self, stack: TlsStack) -> None:
        self.stack = stack
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload-caller")

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            with self.stack.client(self.stack.infer) as client:
                try:
                    client.infer("digits", {"pixels": PIXELS})
                    self.calls += 1
                except InferenceServerError as error:
                    self.failures.append(str(error))

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_front_door_certificate_and_token_file_reload_without_restart(tls_stack: TlsStack) -> None:
    with Caller(tls_stack) as caller:
        reload_front_door(tls_stack)
        calls = caller.calls
        wait_until(lambda: caller.calls >= calls + 3, 30, "calls after the reloads")
    assert caller.failures == []


def reload_front_door(tls_stack: TlsStack) -> None:
    pids = tls_stack.up.pids()
    renewed = tls_stack.authority.issue("renewed")
    write_atomically(tls_stack.cert.key, renewed.key_pem)
    write_atomically(tls_stack.cert.cert, renewed.cert_pem, 0o644)
    expected = x509.load_pem_x509_certificate(renewed.cert_pem).public_bytes(Encoding.DER)
    wait_until(
        lambda: served_certificate(tls_stack.up.layout.port, tls_stack.authority.ca) == expected,
        30,
        "Envoy serving the renewed certificate",
    )
    newcomer = new_token()
    write_atomically(
        tls_stack.tokens_path,
        tls_stack.tokens_path.read_text() + f"{hash_token(newcomer)} admin\n",
    )

    def accepted() -> bool:
        with tls_stack.client(newcomer) as client:
            try:
                client.repository_index()
            except InferenceServerError:
                return False
        return True

    wait_until(accepted, 30, "the new token accepted through Envoy")
    assert tls_stack.up.pids() == pids  # nothing restarted


# -- JWT at the front door


@dataclass
class JwtStack:
    """JWTs at an mTLS front door: callers present a client certificate of the CA, and a JWT."""

    up: UpProcess
    key: SigningKey
    authority: Authority
    client_pair: Pair

    def tls(self, client_pair: Pair | None) -> TlsConfig:
        return TlsConfig(
            root_certificates=self.authority.ca,
            certificate_chain=client_pair.cert if client_pair else None,
            private_key=client_pair.key if client_pair else None,
        )

    def call(
        self,
        token: str | None,
        method: str = "infer",
        headers: dict[str, str] | None = None,
        client_pair: Pair | bool | None = True,
    ) -> str:
        pair = self.client_pair if client_pair is True else client_pair or None
        with Client(
            self.up.target, tls=self.tls(pair), token=token, timeout=20, retry=NO_RETRY
        ) as client:
            try:
                if method == "infer":
                    client.infer("digits", {"pixels": PIXELS}, headers=headers)
                else:
                    client.repository_index(headers=headers)
            except InferenceServerError as error:
                return error.code.name
        return "OK"


@pytest.fixture(scope="module")
def jwt_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JwtStack]:
    root = tmp_path_factory.mktemp("up_jwt")
    key = SigningKey("key-1")
    jwks = key.write_jwks(root / "jwks.json")
    authority = Authority(root / "pki")
    front = authority.issue("front")
    args = [
        "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE, "--jwks", str(jwks),
        "--tls-cert", str(front.cert), "--tls-key", str(front.key),
        "--tls-client-ca", str(authority.ca),
    ]  # fmt: skip
    with tensorgate_up(root, workers=1, args=args) as up:
        yield JwtStack(up, key, authority, authority.issue("caller", server=False))


def test_mtls_front_door_needs_a_client_certificate_of_its_ca(
    jwt_stack: JwtStack, tmp_path: Path
) -> None:
    token = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer"))
    assert "(mTLS, JWT, mTLS to the workers)" in jwt_stack.up.stdout()
    assert jwt_stack.call(token) == "OK"
    assert jwt_stack.call(token, client_pair=None) == "UNAVAILABLE"
    stranger = Authority(tmp_path / "other").issue("caller", server=False)
    assert jwt_stack.call(token, client_pair=stranger) == "UNAVAILABLE"


def test_jwt_valid_token_maps_its_roles_claim(jwt_stack: JwtStack) -> None:
    infer = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer"))
    both = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer,admin"))
    assert jwt_stack.call(infer) == "OK"
    assert jwt_stack.call(infer, "index") == "PERMISSION_DENIED"
    assert jwt_stack.call(both, "index") == "OK"
    # a valid JWT without the roles claim: authenticated, no role
    roleless = claims(ISSUER, AUDIENCE, None)
    del roleless["roles"]
    assert jwt_stack.call(jwt_stack.key.sign(roleless)) == "PERMISSION_DENIED"
    # space-separated, as an OAuth scope claim would be
    scoped = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer admin"))
    assert jwt_stack.call(scoped, "index") == "OK"


def test_jwt_roles_header_sent_by_a_caller_is_ignored(jwt_stack: JwtStack) -> None:
    infer = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer"))
    spoofed = {ROLES_HEADER: "admin"}
    assert jwt_stack.call(infer, "index", headers=spoofed) == "PERMISSION_DENIED"
    assert jwt_stack.call(None, "index", headers=spoofed) == "UNAUTHENTICATED"


def test_jwt_refused_when_expired_signed_by_another_key_or_for_another_audience(
    jwt_stack: JwtStack,
) -> None:
    expired = jwt_stack.key.sign(claims(ISSUER, AUDIENCE, "infer", lifetime_s=-120))
    other_key = SigningKey("key-1").sign(claims(ISSUER, AUDIENCE, "infer"))
    other_audience = jwt_stack.key.sign(claims(ISSUER, "another-service", "infer"))
    other_issuer = jwt_stack.key.sign(claims("https://elsewhere.test", AUDIENCE, "infer"))
    assert jwt_stack.call(expired) == "UNAUTHENTICATED"
    assert jwt_stack.call(other_key) == "UNAUTHENTICATED"
    # Envoy answers a JWT for another audience with 403: PERMISSION_DENIED
    assert jwt_stack.call(other_audience) == "PERMISSION_DENIED"
    assert jwt_stack.call(other_issuer) == "UNAUTHENTICATED"
    assert jwt_stack.call(None) == "UNAUTHENTICATED"
    assert jwt_stack.call("not.a.jwt") == "UNAUTHENTICATED"


def test_jwt_health_stays_open(jwt_stack: JwtStack) -> None:
    with tls_channel(
        jwt_stack.up.target, jwt_stack.authority.ca, jwt_stack.client_pair, name="localhost"
    ) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_no_token_jwt_or_key_in_the_stacks_logs(tls_stack: TlsStack, jwt_stack: JwtStack) -> None:
    logs = tls_stack.up.log() + tls_stack.up.stdout() + jwt_stack.up.log() + jwt_stack.up.stdout()
    assert "tensorgate is up" in logs
    for secret in (tls_stack.infer, tls_stack.admin, tls_stack.limited):
        assert secret not in logs
    assert "eyJ" not in logs  # no JWT (base64 of '{"') in any access log line
    assert "PRIVATE KEY" not in logs
