"""The token check: the token file, the role table, and the sync and asyncio interceptors on real
gRPC servers over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tensorgate.proto import inference_pb2 as pb
from tensorgate.proto.inference_pb2_grpc import GRPCInferenceServiceStub
from tensorgate.server.auth import (
    ROLES_HEADER,
    AioAuthInterceptor,
    Authenticator,
    AuthInterceptor,
    TokenFile,
    TokenFileError,
    hash_token,
    parse_token_lines,
)

SERVICE = "inference.GRPCInferenceService"


def handlers() -> grpc.GenericRpcHandler:
    live = grpc.unary_unary_rpc_method_handler(
        lambda request, context: pb.ServerLiveResponse(live=True),
        request_deserializer=pb.ServerLiveRequest.FromString,
        response_serializer=pb.ServerLiveResponse.SerializeToString,
    )
    unload = grpc.unary_unary_rpc_method_handler(
        lambda request, context: pb.RepositoryModelUnloadResponse(),
        request_deserializer=pb.RepositoryModelUnloadRequest.FromString,
        response_serializer=pb.RepositoryModelUnloadResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(
        SERVICE, {"ServerLive": live, "RepositoryModelUnload": unload}
    )


@pytest.fixture()
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(
        f"# comment\n\n{hash_token('infer-token')} infer\n{hash_token('admin-token')} admin  # ops\n"
    )
    return path


def test_token_file_lines_are_checked_and_errors_name_the_line_only() -> None:
    digest = hash_token("secret-token")
    with pytest.raises(TokenFileError, match=r"tokens, line 2: roles must be among"):
        parse_token_lines([f"{digest} infer", f"{digest} root"], "tokens")
    with pytest.raises(TokenFileError, match=r"line 1: the first field must be 64 hex digits"):
        parse_token_lines(["secret-token infer"], "tokens")
    with pytest.raises(TokenFileError) as error:
        parse_token_lines(["secret-token"], "tokens")
    assert "secret-token" not in str(error.value)


def test_roles_of_a_token(token_file: Path) -> None:
    tokens = TokenFile(token_file)
    assert tokens.roles_of("infer-token") == {"infer"}
    assert tokens.roles_of("admin-token") == {"admin"}
    assert tokens.roles_of("infer-token ") is None
    assert tokens.roles_of("") is None


def test_a_malformed_new_file_keeps_the_last_good_tokens(token_file: Path) -> None:
    tokens = TokenFile(token_file, check_seconds=0.0)
    token_file.write_text("not a token line\n")
    assert tokens.roles_of("infer-token") == {"infer"}
    token_file.write_text(f"{hash_token('next')} admin,infer\n")
    assert tokens.roles_of("infer-token") is None
    assert tokens.roles_of("next") == {"admin", "infer"}


def check(authenticator: Authenticator, method: str, *metadata: tuple[str, str]) -> str:
    denial = authenticator.check(f"/{SERVICE}/{method}", metadata)
    return "ok" if denial is None else denial.code.name


def test_roles_header_is_trusted_only_when_configured(token_file: Path) -> None:
    tokens_only = Authenticator(TokenFile(token_file), trust_roles_header=False)
    behind_envoy = Authenticator(None, trust_roles_header=True)
    spoofed = (ROLES_HEADER, "admin")
    assert check(tokens_only, "RepositoryModelUnload", spoofed) == "UNAUTHENTICATED"
    assert check(behind_envoy, "RepositoryModelUnload", spoofed) == "ok"
    assert check(behind_envoy, "RepositoryModelUnload", (ROLES_HEADER, "infer")) == (
        "PERMISSION_DENIED"
    )
    # through Envoy, a call without the header had a valid JWT without the roles claim
    assert check(behind_envoy, "ServerLive") == "PERMISSION_DENIED"
    assert behind_envoy.check("/grpc.health.v1.Health/Check", ()) is None


@pytest.fixture()
def sync_server(token_file: Path) -> Iterator[str]:
    from concurrent.futures import ThreadPoolExecutor

    authenticator = Authenticator(TokenFile(token_file), trust_roles_header=False)
    server = grpc.server(
        ThreadPoolExecutor(4, thread_name_prefix="test-auth"),
        interceptors=[AuthInterceptor(authenticator)],
    )
    server.add_generic_rpc_handlers((handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def outcomes(stub: GRPCInferenceServiceStub) -> dict[tuple[str, str], str]:
    seen = {}
    for token in ("", "wrong", "infer-token", "admin-token"):
        metadata = [("authorization", f"Bearer {token}")] if token else []
        for name, call, request in (
            ("ServerLive", stub.ServerLive, pb.ServerLiveRequest()),
            ("Unload", stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest()),
        ):
            try:
                call(request, metadata=metadata, timeout=5)
                seen[token or "none", name] = "OK"
            except grpc.RpcError as error:
                seen[token or "none", name] = error.code().name
    return seen


EXPECTED = {
    ("none", "ServerLive"): "UNAUTHENTICATED",
    ("none", "Unload"): "UNAUTHENTICATED",
    ("wrong", "ServerLive"): "UNAUTHENTICATED",
    ("wrong", "Unload"): "UNAUTHENTICATED",
    ("infer-token", "ServerLive"): "OK",
    ("infer-token", "Unload"): "PERMISSION_DENIED",
    ("admin-token", "ServerLive"): "PERMISSION_DENIED",
    ("admin-token", "Unload"): "OK",
}


def test_sync_interceptor(sync_server: str) -> None:
    with grpc.insecure_channel(sync_server) as channel:
        assert outcomes(GRPCInferenceServiceStub(channel)) == EXPECTED


def test_aio_interceptor_decides_the_same(token_file: Path) -> None:
    async def run() -> dict[tuple[str, str], str]:
        authenticator = Authenticator(TokenFile(token_file), trust_roles_header=False)
        server = grpc.aio.server(interceptors=[AioAuthInterceptor(authenticator)])
        server.add_generic_rpc_handlers((handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            # the blocking stub in a thread: the server's loop keeps running
            def drive() -> dict[tuple[str, str], str]:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    return outcomes(GRPCInferenceServiceStub(channel))

            return await asyncio.to_thread(drive)
        finally:
            await server.stop(None)

    assert asyncio.run(run()) == EXPECTED
