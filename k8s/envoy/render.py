"""Render the Envoy bootstraps of k8s/: the balancer's kubernetes bootstrap plus a stats listener.

Envoy's admin interface stays on 127.0.0.1 inside the pod. The kubelet's readiness probe and
Prometheus need two of its pages from outside, so a second listener (``envoy-metrics``, 9902)
forwards exactly ``/ready`` and ``/stats/prometheus`` to the admin interface, and nothing else.

Two sets of files:
- ``k8s/base/envoy.json``: plaintext, the base's ConfigMap ``envoy-config``;
- ``k8s/components/tls/``: ``envoy.json`` with TLS at the front door and mTLS to the workers, and
  the SDS files it reads the certificates through (reloaded when the mounted Secrets change).

    python k8s/envoy/render.py            # rewrite them all
    python k8s/envoy/render.py --check    # exit 1 when one differs from a fresh render
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
    WORKERS_CLUSTER,
    render_bootstrap,
    seconds,
    socket_address,
)
from tensorgate.balancer.settings import BalancerSettings

K8S = Path(__file__).resolve().parents[1]
OUTPUT = K8S / "base" / "envoy.json"
TLS_OUTPUT = K8S / "components" / "tls"
STATS_PORT = 9902
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
#: Where the Envoy pod mounts its ConfigMap (the bootstrap and the SDS files) and the two Secrets of
#: components/tls: the front door's certificate, and the internal one it presents to the workers.
CONFIG_DIR = "/etc/envoy"
FRONT_DOOR_TLS_DIR = "/etc/envoy-tls/front-door"
INTERNAL_TLS_DIR = "/etc/envoy-tls/internal"
#: The name the workers' internal certificate carries (the headless Service's), checked by Envoy.
WORKERS_NAME = "tensorgate-workers"
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


def sds_files(front_door_dir: str, internal_dir: str) -> dict[str, dict[str, Any]]:
    """The SDS resources, one file each: Envoy watches the Secret's directory and re-reads the
    files when Kubernetes swaps them (its atomic symlink update), so rotation needs no restart."""

    def certificate(name: str, directory: str) -> dict[str, Any]:
        return {
            "@type": f"{TLS_TYPE}.Secret",
            "name": name,
            "tls_certificate": {
                "certificate_chain": {"filename": f"{directory}/tls.crt"},
                "private_key": {"filename": f"{directory}/tls.key"},
                "watched_directory": {"path": directory},
            },
        }

    validation = {
        "@type": f"{TLS_TYPE}.Secret",
        "name": "internal_ca",
        "validation_context": {
            "trusted_ca": {"filename": f"{internal_dir}/ca.crt"},
            "watched_directory": {"path": internal_dir},
            "match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": WORKERS_NAME}}
            ],
        },
    }
    return {
        "front-door-certificate.json": {"resources": [certificate("front_door", front_door_dir)]},
        "internal-certificate.json": {"resources": [certificate("internal", internal_dir)]},
        "internal-ca.json": {"resources": [validation]},
    }


def sds(name: str, filename: str, config_dir: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {
                "path": f"{config_dir}/{filename}",
                "watched_directory": {"path": config_dir},
            },
            "resource_api_version": "V3",
        },
    }


def tls_params() -> dict[str, Any]:
    return {"tls_minimum_protocol_version": "TLSv1_2"}


def with_tls(bootstrap: dict[str, Any], port: int, config_dir: str = CONFIG_DIR) -> dict[str, Any]:
    """TLS on the front door (``port``), and mTLS from Envoy to the workers: Envoy presents the
    internal certificate and accepts only workers whose certificate the internal CA signed for
    :data:`WORKERS_NAME`. gRPC needs ALPN ``h2`` on both sides."""
    static = bootstrap["static_resources"]
    (front_door,) = [
        listener
        for listener in static["listeners"]
        if listener["address"]["socket_address"]["port_value"] == port
    ]
    for chain in front_door["filter_chains"]:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": f"{TLS_TYPE}.DownstreamTlsContext",
                "common_tls_context": {
                    "tls_params": tls_params(),
                    "alpn_protocols": ["h2"],
                    "tls_certificate_sds_secret_configs": [
                        sds("front_door", "front-door-certificate.json", config_dir)
                    ],
                },
            },
        }
    (workers,) = [c for c in static["clusters"] if c["name"] == WORKERS_CLUSTER]
    workers["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"{TLS_TYPE}.UpstreamTlsContext",
            "sni": WORKERS_NAME,
            "common_tls_context": {
                "tls_params": tls_params(),
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [
                    sds("internal", "internal-certificate.json", config_dir)
                ],
                "validation_context_sds_secret_config": sds(
                    "internal_ca", "internal-ca.json", config_dir
                ),
            },
        },
    }
    return bootstrap


def rendered_files(
    port: int = 8000,
    admin_port: int = 9901,
    stats_port: int = STATS_PORT,
    config_dir: str = CONFIG_DIR,
    front_door_dir: str = FRONT_DOOR_TLS_DIR,
    internal_dir: str = INTERNAL_TLS_DIR,
) -> dict[Path, str]:
    """Every committed file: the plain bootstrap, and the TLS bootstrap with its SDS files."""
    tls = with_tls(render(port, admin_port, stats_port), port, config_dir)
    files = {
        OUTPUT: to_json(render(port, admin_port, stats_port)),
        TLS_OUTPUT / "envoy.json": to_json(tls),
    }
    for name, content in sds_files(front_door_dir, internal_dir).items():
        files[TLS_OUTPUT / name] = to_json(content)
    return files


def to_json(bootstrap: dict[str, Any]) -> str:
    return json.dumps(bootstrap, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    parser.add_argument("--output", type=Path, help="write only the plain bootstrap, here")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--stats-port", type=int, default=STATS_PORT)
    args = parser.parse_args(argv)
    if args.output is not None:
        files = {args.output: to_json(render(args.port, args.admin_port, args.stats_port))}
    else:
        files = rendered_files(args.port, args.admin_port, args.stats_port)
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            sys.stderr.write(f"{path} is stale: run python k8s/envoy/render.py\n")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
