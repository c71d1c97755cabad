"""docs/scaling.md quotes the series counts of k8s/cardinality.py, which counts them on the real
metrics registry: a new metric or label makes this fail until the plan is updated."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_scaling_plan_quotes_the_registry_counts() -> None:
    spec = importlib.util.spec_from_file_location("cardinality", ROOT / "k8s" / "cardinality.py")
    assert spec is not None and spec.loader is not None
    cardinality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cardinality)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cardinality.main([]) == 0
    figures = [line.rsplit(None, 1)[-1] for line in out.getvalue().splitlines()]
    doc = (ROOT / "docs" / "scaling.md").read_text()
    table = doc.split("## Prometheus", 1)[1].split("\n## ", 1)[0]
    for figure in figures:
        assert f"| {figure} |" in table or f"| **{figure}** |" in table, figure
