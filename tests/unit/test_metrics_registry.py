"""The worker's real registry exposes every issue-6 series, with exactly the documented labels."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tensorgate.server.batching import BatchEvent
from tensorgate.server.errors import ResourceExhaustedError
from tensorgate.server.metrics import Metrics, ModelStateCollector
from tests.unit.test_alert_rules import HISTOGRAMS, TENSORGATE_METRICS


def exposed() -> dict[str, set[str]]:
    metrics = Metrics()
    metrics.registry.register(
        ModelStateCollector(lambda: [("digits", "1", "READY", "")], lambda: {"digits": 0})
    )
    with metrics.track_request("digits", "1"):
        pass
    try:
        with metrics.track_request("digits", "1"):
            raise ResourceExhaustedError("queue full")
    except ResourceExhaustedError:
        pass
    observer = metrics.batch_observer("digits")
    observer.on_batch(BatchEvent(4, [0.001] * 4, 0.002, []))
    observer.on_reject("queue_full")
    metrics.on_hit("digits", "memory", 0.00001)
    metrics.on_miss("digits", 0.00001)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            name = sample.name
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                if name.removesuffix(suffix) in HISTOGRAMS or (
                    suffix == "_created" and name.endswith(suffix)
                ):
                    name = name.removesuffix(suffix)
            labels.setdefault(name, set()).update(k for k in sample.labels if k != "le")
    return labels


def test_every_documented_series_is_exposed_with_its_labels() -> None:
    found = exposed()
    for name, documented in TENSORGATE_METRICS.items():
        base = name.removesuffix("_total") if name.endswith("_total") else name
        assert name in found or base in found, f"{name} is not exposed"
        assert found.get(name, found.get(base)) == set(documented), name
