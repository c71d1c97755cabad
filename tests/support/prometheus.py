"""A real Prometheus (Debian's binary) on loopback for end-to-end tests, with the alert rules loaded."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.processes import REPO_ROOT, free_port
from tests.support.waiting import wait_until

ALERT_RULES = REPO_ROOT / "k8s" / "monitoring" / "alerts.yaml"


def shorten(rules: str) -> str:
    """alerts.yaml with minutes as seconds: [5m] -> [5s], for: 1m -> for: 1s, offset 1h -> offset 60s."""
    rules = re.sub(r"\[(\d+)m\]", r"[\1s]", rules)
    rules = re.sub(r"\bfor: (\d+)m\b", r"for: \1s", rules)
    return re.sub(r"\boffset (\d+)h\b", lambda m: f"offset {int(m[1]) * 60}s", rules)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", query=expr)["result"]

    def firing(self) -> set[str]:
        return {
            a["labels"]["alertname"]
            for a in self._get("/api/v1/alerts")["alerts"]
            if a["state"] == "firing"
        }

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


def config(worker_targets: Sequence[str], envoy_target: str, rules_path: Path) -> str:
    """Scrapes every second, evaluates every second."""
    workers = ", ".join(f'"{t}"' for t in worker_targets)
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 800ms
  evaluation_interval: 1s
rule_files: ["{rules_path}"]
scrape_configs:
  - job_name: tensorgate
    static_configs: [{{targets: [{workers}]}}]
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs: [{{targets: ["{envoy_target}"]}}]
"""


@contextmanager
def prometheus(
    directory: Path, worker_targets: Sequence[str], envoy_target: str
) -> Iterator[Prometheus]:
    """Runs `prometheus` with the alert rules (windows shortened to seconds) until the block ends."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make system-deps` installs Debian's package"
    rules = directory / "alerts.yaml"
    rules.write_text(shorten(ALERT_RULES.read_text()))
    config_path = directory / "prometheus.yml"
    config_path.write_text(config(worker_targets, envoy_target, rules))
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port)
    try:

        def ready() -> bool:
            assert process.poll() is None, (directory / "prometheus.log").read_text()[-2000:]
            return server.ready()

        wait_until(ready, 30, "prometheus to become ready", interval=0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
