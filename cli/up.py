"""``tensorgate up``: N workers behind Envoy on one host, supervised until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import sys

from tensorgate.balancer.envoy import EnvoyNotFound, envoy_binary
from tensorgate.balancer.ports import PortLayout, busy_ports
from tensorgate.balancer.supervisor import StackConfig, Supervisor
from tensorgate.server.errors import RepositoryError
from tensorgate.server.flags import add_settings_flags, settings_from_flags
from tensorgate.server.repository import check_repository
from tensorgate.server.settings import usable_cores

HELP = "start N workers behind Envoy (least-request, health checks, retries) and supervise them"
#: Worker settings that ``up`` decides itself: each worker's port follows the front door's.
DECIDED_BY_UP = ("port", "workers", "metrics_port", "host", "host_workers")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("up", help=HELP, description=HELP)
    stack = parser.add_argument_group("the stack")
    stack.add_argument("--port", type=int, default=8000, help="the front door (Envoy) gRPC port")
    stack.add_argument(
        "--host",
        help="the front door's bind address (default 127.0.0.1); workers always bind 127.0.0.1",
    )
    stack.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin, on 127.0.0.1")
    stack.add_argument(
        "--metrics-port",
        type=int,
        default=9100,
        help="worker i serves /metrics on this + i; 0: off (default %(default)s)",
    )
    stack.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    add_settings_flags(
        parser.add_argument_group("worker settings, passed to every worker"),
        exclude=DECIDED_BY_UP,
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    settings = settings_from_flags(
        args, exclude=DECIDED_BY_UP, port=args.port, metrics_port=args.metrics_port
    )
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        envoy_binary()
        layout = PortLayout(
            args.port,
            args.admin_port,
            args.metrics_port,
            usable_cores() if args.workers is None else args.workers,
        )
        config = StackConfig.build(settings.model_repository, layout, settings, args.host)
    except (ValueError, EnvoyNotFound) as err:
        print(f"tensorgate up: {err}", file=sys.stderr)
        return 2
    try:
        check_repository(settings.model_repository)
    except RepositoryError as err:
        print(f"tensorgate up: {err.message}", file=sys.stderr)
        return 2
    busy = busy_ports(layout.all_ports())
    if busy:
        print(f"tensorgate up: ports already in use: {busy}", file=sys.stderr)
        return 1
    return Supervisor(config).run(on_ready=lambda: print(banner(config), flush=True))


def banner(config: StackConfig) -> str:
    """What the user sees once the stack is up."""
    layout = config.layout
    metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in layout.metrics_ports()) or "off"
    return "\n".join(
        [
            f"tensorgate is up: {layout.workers} workers behind Envoy",
            f"  gRPC front door   {config.balancer.listen_host}:{layout.port}",
            f"  worker metrics    {metrics}",
            f"  Envoy stats       http://127.0.0.1:{layout.admin_port}/stats/prometheus",
            "Ctrl-C drains and stops (a second Ctrl-C kills at once); "
            "SIGHUP restarts the workers one at a time.",
        ]
    )
