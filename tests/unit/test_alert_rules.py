"""The alert rules, the example Prometheus config and the Grafana dashboard, checked with promtool.

promtool comes from Debian's ``prometheus`` package (installed by ``make test`` and ``.ci/run``).
Every PromQL expression is also checked against the metric names and labels that issue 6 fixes as
the public interface: a typo in a metric name would otherwise give an alert that never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
ALERTS = MONITORING / "alerts.yaml"
ALERTS_TEST = MONITORING / "alerts_test.yaml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

#: The public interface of issue 6: metric name -> its labels. Histograms list their base name.
TENSORGATE_METRICS: dict[str, frozenset[str]] = {
    "tensorgate_request_duration_seconds": frozenset({"model", "version", "status"}),
    "tensorgate_queue_duration_seconds": frozenset({"model"}),
    "tensorgate_compute_duration_seconds": frozenset({"model"}),
    "tensorgate_batch_size": frozenset({"model"}),
    "tensorgate_requests_total": frozenset({"model", "version", "status"}),
    "tensorgate_cache_hits_total": frozenset({"model", "tier"}),
    "tensorgate_cache_misses_total": frozenset({"model"}),
    "tensorgate_rejected_total": frozenset({"model", "reason"}),
    "tensorgate_inflight_requests": frozenset(),
    "tensorgate_queue_depth": frozenset({"model"}),
    "tensorgate_model_ready": frozenset({"model", "version"}),
}
HISTOGRAMS = frozenset(
    {
        "tensorgate_request_duration_seconds",
        "tensorgate_queue_duration_seconds",
        "tensorgate_compute_duration_seconds",
        "tensorgate_batch_size",
    }
)
#: Envoy's own series (job "envoy", /stats/prometheus), as Envoy 1.40 names them.
ENVOY_METRICS: dict[str, frozenset[str]] = {
    name: frozenset({"envoy_cluster_name"})
    for name in (
        "envoy_cluster_outlier_detection_ejections_enforced_total",
        "envoy_cluster_outlier_detection_ejections_active",
        "envoy_cluster_membership_healthy",
        "envoy_cluster_membership_total",
        "envoy_cluster_upstream_rq_active",
        "envoy_cluster_upstream_rq_total",
    )
}
#: Labels every scraped series carries.
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = frozenset({"critical", "warning"})
#: Words of PromQL that look like metric names but are not.
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
)


def allowed_labels() -> dict[str, frozenset[str]]:
    """Every series name a query may select, with the labels it may match on."""
    allowed: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    for name, labels in {**TENSORGATE_METRICS, **ENVOY_METRICS}.items():
        allowed[name] = labels | TARGET_LABELS
    for name in HISTOGRAMS:
        labels = TENSORGATE_METRICS[name] | TARGET_LABELS
        allowed[f"{name}_bucket"] = labels | {"le"}
        allowed[f"{name}_sum"] = labels
        allowed[f"{name}_count"] = labels
    return allowed


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The series selectors of a PromQL expression: (metric name, label names matched on)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\$\w+", "x", expr)  # Grafana variables
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )  # grouping label lists
    found = []
    for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call = match.groups()
        if call or name in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or an operator
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by``, ``without``, ``on`` and ``ignoring`` clauses."""
    clauses = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
    return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_targets() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target for panel in panels for target in panel["targets"]]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not on PATH: apt-get install -y prometheus (Debian's package)")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=MONITORING, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = run_promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = run_promtool("check", "config", PROMETHEUS_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"tensorgate", "envoy"}


def test_every_alert_is_tested_both_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts - firing == set(), "alerts with no test where they fire"
    assert alerts - silent == set(), "alerts with no test where they stay silent"


def test_every_alert_has_a_severity_and_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    headings = set(re.findall(r"^## (\w+)$", runbook, flags=re.MULTILINE))
    for rule in load_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert {"summary", "description"} <= rule["annotations"].keys(), name
        assert name in headings, f"docs/runbook.md has no '## {name}' section"
        section = runbook.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning**", "**Check**", "**Act**"):
            assert part in section, f"runbook entry {name} lacks {part}"


def test_queries_use_only_documented_metrics_and_labels() -> None:
    exprs = [rule["expr"] for rule in load_rules()] + [t["expr"] for t in dashboard_targets()]
    allowed = allowed_labels()
    for expr in exprs:
        found = selectors(expr)
        assert found, f"no metric found in {expr!r}"
        for name, labels in found:
            assert name in allowed, f"{name!r} is not a documented metric (in {expr!r})"
            assert labels <= allowed[name], f"{name}: undocumented labels {labels - allowed[name]}"
        known = set().union(*(allowed[name] for name, _ in found))
        assert grouping_labels(expr) <= known, f"grouping by unknown labels in {expr!r}"


def test_selector_extraction_sees_names_labels_and_skips_functions() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(tensorgate_x_bucket{model=~"$m"}'
        '[$__rate_interval] offset 1h))) / ignoring (tier) group_left () up{job="a"} > bool 1'
    )
    assert selectors(expr) == [("tensorgate_x_bucket", {"model"}), ("up", {"job"})]


def test_dashboard_shows_every_documented_metric() -> None:
    used = {name for t in dashboard_targets() for name, _ in selectors(t["expr"])}
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert set(TENSORGATE_METRICS) - bases == set()
    assert set(ENVOY_METRICS) - used == set()


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query, its Grafana variables filled in."""
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": t["expr"].replace("$__rate_interval", "5m").replace("$model", ".*"),
        }
        for i, t in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_the_operator_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in (
        "throughput",
        "p50 / p99",
        "error ratio",
        "queue depth",
        "batch size",
        "cache hit ratio",
        "rejections",
        "in-flight",
        "envoy active requests",
        "envoy ejections",
    ):
        assert topic in titles, f"no panel for {topic}"
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert [t["refId"] for t in panel["targets"]] == [
            chr(65 + i) for i in range(len(panel["targets"]))
        ]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "model"}


def test_dashboard_and_alert_agree_on_server_errors() -> None:
    """The error-ratio panel counts exactly the statuses the alert counts."""
    status_regex = re.compile(r'status=~"([^"]+)"')
    (alert,) = [r for r in load_rules() if r["alert"] == "TensorgateHighErrorRatio"]
    (panel,) = [
        p
        for p in json.loads(DASHBOARD.read_text())["panels"]
        if "error ratio" in p["title"].lower()
    ]
    assert status_regex.findall(alert["expr"]) == status_regex.findall(panel["targets"][0]["expr"])


def test_every_window_can_be_shortened_by_one_substitution() -> None:
    """Windows are `[Nm]`, `for: Nm` or `offset Nh` only, so an e2e test can turn minutes into
    seconds (docs/monitoring.md)."""
    for rule in load_rules():
        assert re.fullmatch(r"\d+m", rule.get("for", "0m")), rule["alert"]
        for window in re.findall(r"\[([^\]]*)\]", rule["expr"]):
            assert re.fullmatch(r"\d+m", window), (rule["alert"], window)
        for offset in re.findall(r"\boffset\s+(\w+)", rule["expr"]):
            assert re.fullmatch(r"\d+h", offset), (rule["alert"], offset)
