"""A small client of Envoy's admin interface: how Envoy sees each worker, and its counters."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tensorgate.balancer.envoy_config import WORKERS_CLUSTER

#: Admin calls are local and cheap; a slow answer means Envoy is not up (yet).
ADMIN_TIMEOUT_SECONDS = 2.0


class AdminUnavailable(Exception):
    """Envoy's admin interface did not answer."""


@dataclass(frozen=True)
class HostStatus:
    """One upstream host as Envoy sees it."""

    host: str
    port: int
    healthy: bool
    flags: tuple[str, ...]
    stats: dict[str, int]

    @property
    def rq_total(self) -> int:
        """Requests Envoy sent to this host, retries included."""
        return self.stats.get("rq_total", 0)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HostStatus:
        address = raw["address"]["socket_address"]
        health: dict[str, Any] = raw.get("health_status", {})
        flags = tuple(
            sorted(k for k, v in health.items() if k != "eds_health_status" and v is True)
        )
        healthy = health.get("eds_health_status") == "HEALTHY" and not flags
        stats = {s["name"]: int(s.get("value", 0)) for s in raw.get("stats", [])}
        return cls(address["address"], int(address["port_value"]), healthy, flags, stats)


class EnvoyAdmin:
    """Envoy's admin interface at ``http://127.0.0.1:<port>``."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base_url = f"http://{host}:{port}"

    def _request(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT_SECONDS) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (OSError, urllib.error.URLError) as err:
            raise AdminUnavailable(f"{self.base_url}{path}: {err}") from err

    def hosts(self, cluster: str = WORKERS_CLUSTER) -> list[HostStatus]:
        """Every host of ``cluster``, with its health and request counters."""
        status, body = self._request("/clusters?format=json")
        if status != 200:
            raise AdminUnavailable(f"{self.base_url}/clusters answered HTTP {status}")
        for entry in json.loads(body).get("cluster_statuses", []):
            if entry.get("name") == cluster:
                return [HostStatus.from_json(h) for h in entry.get("host_statuses", [])]
        return []

    def healthy_ports(self, cluster: str = WORKERS_CLUSTER) -> set[int]:
        """Ports of the hosts Envoy would route to now."""
        return {h.port for h in self.hosts(cluster) if h.healthy}

    def drain_listeners(self) -> None:
        """Starts Envoy's graceful drain: GOAWAY to every caller's connection, then the listeners
        close after the drain time (``--drain-time-s``)."""
        status, body = self._request("/drain_listeners?graceful", method="POST")
        if status != 200:
            raise AdminUnavailable(
                f"{self.base_url}/drain_listeners answered HTTP {status}: {body!r}"
            )

    def stats(self, prefix: str) -> dict[str, int]:
        """Counters and gauges whose name starts with ``prefix``."""
        status, body = self._request(f"/stats?format=json&filter=^{prefix}")
        if status != 200:
            raise AdminUnavailable(f"{self.base_url}/stats answered HTTP {status}")
        return {
            s["name"]: int(s["value"])
            for s in json.loads(body).get("stats", [])
            if "value" in s and isinstance(s["value"], int)
        }
