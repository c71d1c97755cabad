"""TLS, mTLS and tokens on a real `tensorgate serve`: real handshakes over loopback, certificates made
here, every role against every RPC, reloads under load, tritonclient over TLS, no secret in the logs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tensorgate.balancer.local_ca import SERVER_NAME, Authority, Pair
from tensorgate.client import AsyncClient, Client, InferenceServerError, TlsConfig
from tensorgate.codec.tensors import to_raw
from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.server.auth import hash_token
from tensorgate.tools.probes import free_port
from tests.support.models import make_test_repository
from tests.support.processes import REPO_ROOT, ServerProcess, serve
from tests.support.security import (
    Tokens,
    handshake,
    tls_channel,
    wait_until_tls_serving,
    write_atomically,
    write_token_file,
)
from tests.support.waiting import wait_until

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

#: docs/security.md's table: the role each RPC needs.
INFER_RPCS = (
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
ADMIN_RPCS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


def infer_request() -> pb.ModelInferRequest:
    x = np.ones((1, 4), np.float32)
    return pb.ModelInferRequest(
        model_name="add",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])],
        raw_input_contents=[to_raw(x)],
    )


#: One request per RPC; the repository calls name a model that does not exist (nothing changes).
REQUESTS: dict[str, object] = {
    "ServerLive": pb.ServerLiveRequest(),
    "ServerReady": pb.ServerReadyRequest(),
    "ServerMetadata": pb.ServerMetadataRequest(),
    "ModelReady": pb.ModelReadyRequest(name="add"),
    "ModelMetadata": pb.ModelMetadataRequest(name="add"),
    "ModelConfig": pb.ModelConfigRequest(name="add"),
    "ModelStatistics": pb.ModelStatisticsRequest(name="add"),
    "ModelInfer": infer_request(),
    "ModelStreamInfer": infer_request(),
    "RepositoryIndex": pb.RepositoryIndexRequest(),
    "RepositoryModelLoad": pb.RepositoryModelLoadRequest(model_name="no_such_model"),
    "RepositoryModelUnload": pb.RepositoryModelUnloadRequest(model_name="no_such_model"),
}


def call_rpc(channel: grpc.Channel, method: str, token: str | None) -> grpc.StatusCode:
    """The status ``method`` ends with for a caller presenting ``token``."""
    stub = GRPCInferenceServiceStub(channel)
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    try:
        if method == "ModelStreamInfer":
            replies = list(
                stub.ModelStreamInfer(iter([REQUESTS[method]]), metadata=metadata, timeout=10)
            )
            assert replies and not replies[0].error_message, replies
        else:
            getattr(stub, method)(REQUESTS[method], metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@dataclass
class Pki:
    authority: Authority
    server: Pair
    client: Pair
    other_authority: Authority
    other_client: Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    authority = Authority(root / "ca")
    other = Authority(root / "other", name="another CA")
    return Pki(
        authority,
        authority.issue("server"),
        authority.issue("client", server=False),
        other,
        other.issue("client", server=False),
    )


@contextmanager
def tls_server(
    root: Path, pki: Pki, *args: str, client_ca: bool = False, server: Pair | None = None
) -> Iterator[ServerProcess]:
    repository = root / "models"
    if not repository.exists():
        make_test_repository(repository)
    pair = server or pki.server
    flags = ["--models", "add", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key), *args]
    if client_ca:
        flags += ["--tls-client-ca", str(pki.authority.ca)]
    with serve(repository, *flags, log_dir=root, wait=False) as process:
        wait_until_tls_serving(
            process.target, pki.authority.ca, process.process, pki.client if client_ca else None
        )
        yield process


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return write_token_file(tmp_path_factory.mktemp("tokens") / "tokens")


@pytest.fixture(scope="module")
def token_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, tokens: Tokens
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("token_server")
    with tls_server(root, pki, "--auth-tokens", str(tokens.path), "--log-level", "DEBUG") as server:
        yield server


@pytest.fixture(scope="module")
def probe_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, probe_port: int
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("mtls_server")
    flags = ["--no-reflection", "--health-port", str(probe_port)]
    with tls_server(root, pki, *flags, client_ca=True) as server:
        yield server


def test_a_plaintext_health_port_answers_probes_and_nothing_else(
    mtls_server: ServerProcess, probe_port: int
) -> None:
    """Kubernetes' gRPC probes cannot do TLS: --health-port serves grpc.health.v1 alone."""
    with grpc.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as error:
            GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def secure_client(server: ServerProcess, pki: Pki, token: str | None = None) -> Client:
    tls = TlsConfig(root_certificates=pki.authority.ca, server_name_override=SERVER_NAME)
    return Client(server.target, tls=tls, token=token, timeout=10)


# -- TLS


def test_plaintext_to_a_tls_port_fails(token_server: ServerProcess, tokens: Tokens) -> None:
    with (
        Client(token_server.target, token=tokens.infer, timeout=5) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_server_signed_by_another_ca_is_refused(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    tls = TlsConfig(root_certificates=pki.other_authority.ca, server_name_override=SERVER_NAME)
    with (
        Client(token_server.target, tls=tls, token=tokens.infer, timeout=5) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_tls_with_the_right_ca_and_a_token_infers(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    with secure_client(token_server, pki, tokens.infer) as client:
        outputs = client.infer("add", {"x": np.ones((1, 4), np.float32)})
        assert outputs["y"].tolist() == [[3.0, 3.0, 3.0, 3.0]]  # version 2 adds 2
        assert client.server_metadata().name == "tensorgate"
        assert client.model_config("add")["max_batch_size"] > 0
        assert client.model_statistics("add")[0]["name"] == "add"


def test_async_client_over_tls_with_a_token_has_every_call(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    async def run() -> dict[str, object]:
        tls = TlsConfig(root_certificates=pki.authority.ca, server_name_override=SERVER_NAME)
        async with AsyncClient(
            token_server.target, tls=tls, token=tokens.both, timeout=10
        ) as client:
            return {
                "server": (await client.server_metadata()).name,
                "inputs": [t.name for t in (await client.model_metadata("add")).inputs],
                "config": (await client.model_config("add"))["name"],
                "statistics": [s["name"] for s in await client.model_statistics()],
                "index": sorted({m.name for m in await client.repository_index(ready=True)}),
                "y": (await client.infer("add", {"x": np.zeros((1, 4), np.float32)}))["y"].tolist(),
            }

    assert asyncio.run(run()) == {
        "server": "tensorgate",
        "inputs": ["x"],
        "config": "add",
        "statistics": ["add"],
        "index": ["add"],
        "y": [[2.0, 2.0, 2.0, 2.0]],
    }


def test_tls_1_2_is_the_minimum(token_server: ServerProcess, pki: Pki) -> None:
    ca = pki.authority.ca
    assert handshake(token_server.port, ca, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(token_server.port, ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    # the server hangs up on a TLS 1.1 hello (or alerts): no session either way
    refused = handshake(token_server.port, ca, ssl.TLSVersion.TLSv1_1)
    assert refused in ("UNEXPECTED_EOF_WHILE_READING", "TLSV1_ALERT_PROTOCOL_VERSION"), refused


def test_mtls_without_a_client_certificate_fails(mtls_server: ServerProcess, pki: Pki) -> None:
    with secure_client(mtls_server, pki) as client, pytest.raises(InferenceServerError) as error:
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_with_a_certificate_from_another_ca_fails(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    tls = TlsConfig(
        root_certificates=pki.authority.ca,
        certificate_chain=pki.other_client.cert,
        private_key=pki.other_client.key,
        server_name_override=SERVER_NAME,
    )
    with (
        Client(mtls_server.target, tls=tls, timeout=5) as client,
        pytest.raises(InferenceServerError) as error,
    ):
        client.live()
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_with_a_client_certificate_of_the_ca_works(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    tls = TlsConfig(
        root_certificates=pki.authority.ca.read_bytes(),
        certificate_chain=pki.client.cert_pem,
        private_key=pki.client.key_pem,
        server_name_override=SERVER_NAME,
    )
    with Client(mtls_server.target, tls=tls, timeout=10) as client:
        assert client.live() is True
        assert client.infer("add", {"x": np.zeros((1, 4), np.float32)})["y"].shape == (1, 4)


def test_no_reflection_turns_reflection_off(mtls_server: ServerProcess, pki: Pki) -> None:
    with tls_channel(mtls_server.target, pki.authority.ca, pki.client) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as error:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- tokens and roles

IDENTITIES = ("no token", "unknown token", "infer", "admin", "infer,admin")


def token_of(identity: str, tokens: Tokens) -> str | None:
    return {
        "no token": None,
        "unknown token": "not-a-token-of-this-server",
        "infer": tokens.infer,
        "admin": tokens.admin,
        "infer,admin": tokens.both,
    }[identity]


def expected(identity: str, method: str) -> grpc.StatusCode | None:
    """None: allowed (the call runs); else the status the caller must see."""
    if identity in ("no token", "unknown token"):
        return UNAUTHENTICATED
    needed = "infer" if method in INFER_RPCS else "admin"
    return None if needed in identity.split(",") else PERMISSION_DENIED


@pytest.mark.parametrize("identity", IDENTITIES)
def test_every_role_and_rpc_answer_as_the_table_says(
    token_server: ServerProcess, pki: Pki, tokens: Tokens, identity: str
) -> None:
    seen = {}
    with tls_channel(token_server.target, pki.authority.ca) as channel:
        for method in (*INFER_RPCS, *ADMIN_RPCS):
            seen[method] = call_rpc(channel, method, token_of(identity, tokens))
    for method, code in seen.items():
        wanted = expected(identity, method)
        if wanted is None:
            # allowed: it runs. Load and unload name a model that does not exist (NOT_FOUND), or
            # are refused by a model control mode (FAILED_PRECONDITION): after the role check
            if method in ADMIN_RPCS[1:]:
                assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
            else:
                assert code == grpc.StatusCode.OK, (method, code)
        else:
            assert code == wanted, (identity, method, code)


def test_denials_are_clear_and_reveal_nothing(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    messages = {}
    for name, token in (
        ("none", None),
        ("short", "x"),
        ("close", tokens.infer[:-1]),
        ("infer", tokens.infer),
    ):
        with (
            secure_client(token_server, pki, token) as client,
            pytest.raises(InferenceServerError) as error,
        ):
            client.unload("add")
        messages[name] = (error.value.code, error.value.message)
    assert messages["none"] == (
        UNAUTHENTICATED,
        "authentication required: send 'authorization: Bearer <token>'",
    )
    # an unknown token, short or nearly right, gets one and the same answer
    assert messages["short"] == messages["close"]
    assert messages["short"] == (
        UNAUTHENTICATED,
        "authentication failed: the token is not valid for this server",
    )
    assert messages["infer"] == (
        PERMISSION_DENIED,
        "permission denied: RepositoryModelUnload needs the 'admin' role",
    )
    # and the model still serves: nothing was unloaded
    with secure_client(token_server, pki, tokens.infer) as client:
        assert client.model_ready("add") is True


def test_health_stays_open_without_a_token(token_server: ServerProcess, pki: Pki) -> None:
    with tls_channel(token_server.target, pki.authority.ca) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_a_token(token_server: ServerProcess, pki: Pki, tokens: Tokens) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with tls_channel(token_server.target, pki.authority.ca) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert error.value.code() == UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {tokens.infer}")]
        replies = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=5))
    services = {s.name for s in replies[0].list_services_response.service}
    assert "inference.GRPCInferenceService" in services


def test_cli_takes_tls_flags_and_the_token_variable(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    def models(token: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TENSORGATE_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "tensorgate.cli.main", "models", "--target", token_server.target, "--tls-ca", str(pki.authority.ca)],
            capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT,
        )  # fmt: skip

    # the certificate names tensorgate-worker, localhost and 127.0.0.1: the target's IP matches
    admin = models(tokens.admin)
    assert admin.returncode == 0, admin.stderr
    assert "add" in admin.stdout and "READY" in admin.stdout
    infer = models(tokens.infer)
    assert infer.returncode == 1
    assert "PERMISSION_DENIED" in infer.stderr and "'admin' role" in infer.stderr


def test_tritonclient_over_tls_with_a_token(
    token_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    driver = Path(__file__).parents[1] / "support" / "triton_tls_driver.py"
    result = subprocess.run(
        [sys.executable, str(driver), token_server.target, str(pki.authority.ca), tokens.infer],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert seen["live"] is True and seen["model_ready"] is True
    assert seen["y"] == [[3.0, 3.0, 3.0, 3.0]]
    assert seen["without_token"] == "StatusCode.UNAUTHENTICATED"


# -- files


def test_a_key_readable_by_other_users_is_refused(tmp_path: Path, pki: Pki) -> None:
    key = tmp_path / "world.key"
    key.write_bytes(pki.server.key_pem)
    key.chmod(0o644)
    make_test_repository(tmp_path / "models")
    command = [
        sys.executable, "-m", "tensorgate.cli.main", "serve", "--model-repository", str(tmp_path / "models"),
        "--models", "add", "--port", "0", "--metrics-port", "0",
        "--tls-cert", str(pki.server.cert), "--tls-key", str(key),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "the private key is readable by every user (mode 0644)" in result.stderr
    assert f"chmod 600 {key}" in result.stderr
    assert "BEGIN" not in result.stderr and "Traceback" not in result.stderr


def served_certificate(port: int, ca: Path) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is shown."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as wrapped,
    ):
        certificate = wrapped.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def der(pair: Pair) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pair.cert_pem).public_bytes(Encoding.DER)


class Load:
    """Callers that keep calling until stopped: some on one long connection, some on a new one
    each time (they see the new certificate). Every failure is kept."""

    def __init__(self, make_client: Callable[[], Client], callers: int = 3) -> None:
        self.make_client = make_client
        self.stop = threading.Event()
        self.calls = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), name=f"load-{i}")
            for i in range(callers)
        ]

    def _run(self, reconnect: bool) -> None:
        client = self.make_client()
        try:
            while not self.stop.is_set():
                if reconnect:
                    client.close()
                    client = self.make_client()
                try:
                    client.infer("add", {"x": np.ones((2, 4), np.float32)})
                    with self._lock:
                        self.calls += 1
                except InferenceServerError as error:
                    with self._lock:
                        self.failures.append(str(error))
        finally:
            client.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_token_file_and_certificates_reload_under_load_with_no_failed_request(
    tmp_path: Path, pki: Pki
) -> None:
    tokens = write_token_file(tmp_path / "tokens")
    served = Pair(tmp_path / "served.pem", tmp_path / "served.key")
    write_atomically(served.cert, pki.server.cert_pem, 0o644)
    write_atomically(served.key, pki.server.key_pem)
    with tls_server(tmp_path, pki, "--auth-tokens", str(tokens.path), server=served) as server:
        with Load(lambda: secure_client(server, pki, tokens.infer)) as load:
            wait_until(lambda: load.calls >= 20, 60, "load running")
            # a new token appears, the admin token goes away; the infer token stays
            newcomer = "a-new-token-" + "x" * 20
            write_atomically(
                tokens.path,
                f"{hash_token(tokens.infer)} infer\n{hash_token(newcomer)} infer,admin\n",
            )

            def newcomer_accepted() -> bool:
                with secure_client(server, pki, newcomer) as client:
                    try:
                        client.models()
                    except InferenceServerError:
                        return False
                return True

            wait_until(newcomer_accepted, 30, "the new token accepted")
            with secure_client(server, pki, tokens.admin) as client:
                with pytest.raises(InferenceServerError) as error:
                    client.models()
                assert error.value.code == UNAUTHENTICATED
            # a new certificate (same CA): new connections get it, nothing fails
            renewed = pki.authority.issue("renewed")
            assert served_certificate(server.port, pki.authority.ca) == der(pki.server)
            write_atomically(served.cert, renewed.cert_pem, 0o644)
            write_atomically(served.key, renewed.key_pem)
            wait_until(
                lambda: served_certificate(server.port, pki.authority.ca) == der(renewed),
                30,
                "the renewed certificate served",
            )
            calls_after_reload = load.calls
            wait_until(lambda: load.calls >= calls_after_reload + 20, 60, "load after reload")
        assert load.failures == []
        assert load.calls > 40
        log = server.log()
    assert "token file changed, 2 token(s) now" in log
    assert "certificate files changed" in log


# -- last: nothing secret in what the servers of this module wrote


def test_no_token_or_key_in_any_server_log(
    token_server: ServerProcess, mtls_server: ServerProcess, pki: Pki, tokens: Tokens
) -> None:
    logs = token_server.log() + mtls_server.log()
    assert "auth: 3 token(s)" in logs  # the DEBUG log of a server that saw every identity
    secrets = [tokens.infer, tokens.admin, tokens.both]
    for pair in (pki.server, pki.client):
        body = pair.key_pem.decode().splitlines()[1]  # a line of the key's base64
        secrets.append(body)
    for secret in secrets:
        assert secret not in logs
    assert "PRIVATE KEY" not in logs
