"""Render ``prometheusrule.yaml``: the alert rules of ``k8s/monitoring/alerts.yaml`` as a PrometheusRule.

``alerts.yaml`` stays the one source (promtool tests it); this file wraps its groups in the Prometheus
Operator's custom resource and makes every ``runbook_url`` absolute, from one base URL that the
rendered file records in its first line, so that ``--check`` renders it again with the same base.

    python k8s/components/prometheus-operator/render.py                      # keep the base
    python k8s/components/prometheus-operator/render.py --runbook-base URL   # a new base
    python k8s/components/prometheus-operator/render.py --check              # exit 1 when stale
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parents[1] / "monitoring" / "alerts.yaml"
OUTPUT = HERE / "prometheusrule.yaml"
#: ``runbook_url`` in alerts.yaml: relative to the repository, e.g. docs/runbook.md#tensorgateworkerdown
RELATIVE_RUNBOOK = "docs/runbook.md"
DEFAULT_RUNBOOK_BASE = "https://runbooks.example.com/tensorgate/runbook.md"
BASE_MARKER = "# runbook base: "


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as YAML block scalars, as in alerts.yaml."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockStrings.add_representer(str, _str)


def absolute_runbook(url: str, base: str) -> str:
    """``docs/runbook.md#anchor`` -> ``<base>#anchor``."""
    path, sep, anchor = url.partition("#")
    if path != RELATIVE_RUNBOOK or not sep:
        raise ValueError(f"runbook_url {url!r} is not {RELATIVE_RUNBOOK}#<anchor>")
    return f"{base}#{anchor}"


def prometheus_rule(alerts: dict[str, Any], base: str) -> dict[str, Any]:
    groups = copy.deepcopy(alerts["groups"])
    for group in groups:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            if "runbook_url" in annotations:
                annotations["runbook_url"] = absolute_runbook(annotations["runbook_url"], base)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "tensorgate",
            "labels": {"app.kubernetes.io/name": "tensorgate"},
        },
        "spec": {"groups": groups},
    }


def render(base: str, alerts_path: Path = ALERTS) -> str:
    rule = prometheus_rule(yaml.safe_load(alerts_path.read_text()), base)
    header = (
        f"{BASE_MARKER}{base}\n"
        "# Generated from k8s/monitoring/alerts.yaml by render.py beside this file: do not edit.\n"
        "# `make k8s-generate RUNBOOK_BASE=<url>` sets the base of every runbook_url.\n"
    )
    body = yaml.dump(rule, Dumper=_BlockStrings, sort_keys=False, width=1000)
    return header + body


def recorded_base(path: Path) -> str | None:
    """The base recorded in the first line of a rendered file, if any."""
    first = path.read_text().partition("\n")[0] if path.exists() else ""
    return first.removeprefix(BASE_MARKER) if first.startswith(BASE_MARKER) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--runbook-base", help="absolute URL of docs/runbook.md as you publish it")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    base = args.runbook_base or recorded_base(args.output) or DEFAULT_RUNBOOK_BASE
    if "://" not in base:
        parser.error(f"--runbook-base must be an absolute URL, got {base!r}")
    text = render(base.rstrip("/"))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is stale: run make k8s-generate\n")
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
