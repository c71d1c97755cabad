"""Render ``k8s/base/envoy.json``: the balancer's kubernetes bootstrap plus a stats listener.

Envoy's admin interface stays on 127.0.0.1 inside the pod. The kubelet's readiness probe and
Prometheus need two of its pages from outside, so a second listener (``envoy-metrics``, 9902)
forwards exactly ``/ready`` and ``/stats/prometheus`` to the admin interface, and nothing else.

    python k8s/envoy/render.py            # rewrite k8s/base/envoy.json
    python k8s/envoy/render.py --check    # exit 1 when envoy.json differs from a fresh render
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tensorgate.balancer.envoy_config import (
    HCM_TYPE,
    ROUTER_TYPE,
    render_bootstrap,
    seconds,
    socket_address,
)
from tensorgate.balancer.settings import BalancerSettings

OUTPUT = Path(__file__).resolve().parents[1] / "base" / "envoy.json"
STATS_PORT = 9902
ADMIN_CLUSTER = "envoy_admin"
#: The admin pages reachable through the stats listener.
FORWARDED_ADMIN_PATHS = ("/ready", "/stats/prometheus")


def stats_listener(port: int) -> dict[str, Any]:
    """An HTTP/1.1 listener on every interface forwarding only :data:`FORWARDED_ADMIN_PATHS`."""
    routes = [
        {"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER, "timeout": seconds(5)}}
        for path in FORWARDED_ADMIN_PATHS
    ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "envoy_metrics",
        "codec_type": "AUTO",
        "route_config": {
            "name": "admin_pages",
            "virtual_hosts": [{"name": "admin_pages", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}
        ],
    }
    return {
        "name": "envoy_metrics",
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def admin_cluster(admin_port: int) -> dict[str, Any]:
    """The admin interface on loopback, as an upstream of the stats listener."""
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": seconds(1),
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": socket_address("127.0.0.1", admin_port)}}
                    ]
                }
            ],
        },
    }


def render(
    port: int = 8000, admin_port: int = 9901, stats_port: int = STATS_PORT
) -> dict[str, Any]:
    """The bootstrap of the Envoy pods: front door on ``port``, stats listener on ``stats_port``."""
    settings = BalancerSettings(
        target="kubernetes", listen_host="0.0.0.0", port=port, admin_port=admin_port
    )
    bootstrap = render_bootstrap(settings)
    static = bootstrap["static_resources"]
    static["listeners"].append(stats_listener(stats_port))
    static["clusters"].append(admin_cluster(admin_port))
    return bootstrap


def to_json(bootstrap: dict[str, Any]) -> str:
    return json.dumps(bootstrap, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--stats-port", type=int, default=STATS_PORT)
    args = parser.parse_args(argv)
    text = to_json(render(args.port, args.admin_port, args.stats_port))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python k8s/envoy/render.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
