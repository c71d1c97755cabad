"""``tensorgate top``: a live view of the workers and of Envoy, refreshed every second.

Reads each worker's Prometheus /metrics and Envoy's admin API, the same ports ``tensorgate up``
uses by default. Rates, p50 and p99 cover the time between two refreshes. With ``--once`` it polls
twice, one interval apart, prints one frame and exits: 0 when any source answered, 1 when none did.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from rich.console import Console
from rich.live import Live

from tensorgate.balancer.admin import EnvoyAdmin
from tensorgate.server.settings import Settings
from tensorgate.tools.top import Target, Top, render

EXIT_OK, EXIT_NOTHING_UP = 0, 1


def register(subparsers: Any) -> None:
    """Adds the ``top`` sub-command."""
    parser = subparsers.add_parser(
        "top",
        help="live view: per worker and model throughput, latency, batching, cache; Envoy hosts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = Settings.model_fields
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="workers to read, on consecutive metrics ports (default: one per core, as `up`)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=fields["metrics_port"].default,
        help="worker 0's /metrics port; worker i's is this + i (default %(default)s)",
    )
    parser.add_argument("--metrics-host", default=fields["metrics_host"].default)
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="URL",
        help="explicit /metrics URLs, instead of --workers and --metrics-port",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=9901,
        help="Envoy's admin port (default %(default)s); 0 leaves Envoy out",
    )
    parser.add_argument("--admin-host", default="127.0.0.1")
    parser.add_argument("--cluster", default="tensorgate_workers", help="Envoy's workers cluster")
    parser.add_argument(
        "--interval", type=positive, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=positive,
        default=0.5,
        help="timeout of each /metrics read (default 0.5 s)",
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.set_defaults(func=handle)


def targets(args: argparse.Namespace) -> list[Target]:
    """The workers to read: explicit URLs, or ``--workers`` consecutive ports."""
    if args.metrics:
        return [
            Target(name=url.split("//", 1)[-1].split("/", 1)[0], url=url) for url in args.metrics
        ]
    return [
        Target(name=f"w{i}", url=f"http://{args.metrics_host}:{args.metrics_port + i}/metrics")
        for i in range(args.workers)
    ]


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def handle(args: argparse.Namespace) -> int:
    admin = EnvoyAdmin(args.admin_port, args.admin_host) if args.admin_port else None
    top = Top(targets(args), admin=admin, cluster=args.cluster, timeout=args.timeout)
    console = Console()
    if args.once:
        top.poll()
        time.sleep(args.interval)
        frame = top.poll()
        console.print(render(frame))
        return EXIT_OK if frame.anything_up else EXIT_NOTHING_UP
    try:
        with Live(render(top.poll()), console=console, auto_refresh=False) as live:
            while True:  # rates use each scrape's own time, so the loop need not be exact
                time.sleep(args.interval)
                live.update(render(top.poll()), refresh=True)
    except KeyboardInterrupt:
        return EXIT_OK
