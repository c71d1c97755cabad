"""``variants/report.json`` and the table printed from it: the same figures, in two forms."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from tensorgate.tools.optimize.agreement import Agreement
from tensorgate.tools.optimize.measure import Speed

#: The keys of a variant's entry that hold measured figures (copied into provenance.json).
MEASURED_KEYS = (
    "file_bytes",
    "load_ms",
    "latency_ms_p50",
    "latency_ms_p90",
    "throughput",
    "accuracy",
    "metrics",
    "outputs",
)


def figures(path: Path, load_ms: float, speed: Speed, accuracy: float | None) -> dict[str, Any]:
    """What is measured of every model alike, the original included."""
    return {
        "file_bytes": path.stat().st_size,
        "load_ms": load_ms,
        "latency_ms_p50": speed.latency_ms_p50,
        "latency_ms_p90": speed.latency_ms_p90,
        "throughput": speed.throughput,
        "accuracy": accuracy,
    }


def metrics(
    original: Mapping[str, Any], variant: Mapping[str, Any], agreed: Agreement | None
) -> dict[str, float | None]:
    """The metrics ``--accept`` criteria may name (see ``accept.METRICS``)."""
    drop = None
    if original["accuracy"] is not None and variant["accuracy"] is not None:
        drop = original["accuracy"] - variant["accuracy"]
    return {
        "speedup": variant["throughput"] / original["throughput"],
        "latency_speedup": original["latency_ms_p50"] / variant["latency_ms_p50"],
        "size_ratio": variant["file_bytes"] / original["file_bytes"],
        "max_abs_diff": agreed.max_abs_diff if agreed else None,
        "mean_abs_diff": agreed.mean_abs_diff if agreed else None,
        "top1_agreement": agreed.top1_agreement if agreed else None,
        "accuracy": variant["accuracy"],
        "accuracy_drop": drop,
    }


def variant_entry(
    name: str,
    measured: Mapping[str, Any],
    values: Mapping[str, float | None],
    agreed: Agreement | None,
) -> dict[str, Any]:
    """A variant that was built, loaded and measured."""
    return {
        "status": "ok",
        "file": f"variants/{name}/model.onnx",
        **measured,
        "metrics": dict(values),
        "outputs": agreed.outputs if agreed else {},
    }


def failed_entry(name: str, error: str) -> dict[str, Any]:
    """A variant that could not be built or loaded."""
    return {"status": "failed", "file": f"variants/{name}/model.onnx", "error": error}


def build(**sections: Any) -> dict[str, Any]:
    """The report: the given sections, in order, with the report's format version first."""
    return {"format": 1, **sections}


def write(report: Mapping[str, Any], path: Path) -> None:
    """Writes the report as JSON; NaN and infinities (which JSON lacks) become null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def table(report: Mapping[str, Any]) -> Table:
    """The report as a table: one row for the original, one per variant."""
    original = report["original"]
    measurement = report["measurement"]
    grid = Table(title=f"{report['model']} version {report['version']}", title_justify="left")
    for header in (
        "variant",
        "size",
        f"b{measurement['latency_batch']} p50 ms",
        f"b{measurement['throughput_batch']} rows/s",
        "speedup",
        "max |diff|",
        "mean |diff|",
        "top-1 agree",
        "accuracy",
        "accepted",
    ):
        grid.add_column(header, justify="left" if header in ("variant", "accepted") else "right")
    grid.add_row(
        "original",
        _mb(original["file_bytes"]),
        _num(original["latency_ms_p50"], ".3f"),
        _num(original["throughput"], ",.0f"),
        "1.00x",
        "",
        "",
        "",
        _pct(original["accuracy"]),
        "",
    )
    for name, entry in report["variants"].items():
        if entry["status"] != "ok":
            grid.add_row(name, "", "", "", "", "", "", "", "", f"failed: {entry['error']}")
            continue
        m = entry["metrics"]
        grid.add_row(
            name,
            f"{_mb(entry['file_bytes'])} ({m['size_ratio']:.2f}x)",
            _num(entry["latency_ms_p50"], ".3f"),
            _num(entry["throughput"], ",.0f"),
            f"{m['speedup']:.2f}x",
            _num(m["max_abs_diff"], ".2e"),
            _num(m["mean_abs_diff"], ".2e"),
            _pct(m["top1_agreement"]),
            _pct(m["accuracy"]),
            _accepted(entry),
        )
    return grid


def _accepted(entry: Mapping[str, Any]) -> str:
    if "accepted" not in entry:
        return ""
    return "yes" if entry["accepted"] else "no"


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.2f}%"
