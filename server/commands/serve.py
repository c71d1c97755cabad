"""``tensorgate serve``: one worker, or ``--workers N`` worker processes on consecutive ports."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tensorgate.server.settings import Settings


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `up`; each overrides its TENSORGATE_* variable when given."""
    parser.add_argument("--model-repository", type=Path, help="<repo>/<model>/<version>/model.onnx")
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        help="comma-separated models to load at start (default: all)",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    add_model_control_arguments(parser)
    parser.add_argument("--grpc-threads", type=int, help="handler threads (default: from batching)")
    parser.add_argument("--max-concurrent-rpcs", type=int)
    parser.add_argument("--max-message-bytes", type=int)
    parser.add_argument("--drain-seconds", type=float, help="NOT_SERVING this long before stopping")
    parser.add_argument("--grace-seconds", type=float, help="time for requests in flight to finish")
    parser.add_argument("--intra-op-threads", type=int)
    parser.add_argument("--inter-op-threads", type=int)
    parser.add_argument("--no-warmup", dest="warmup", action="store_const", const=False)
    parser.add_argument(
        "--no-cache",
        dest="cache_enabled",
        action="store_const",
        const=False,
        help="turn the response cache off for the whole server",
    )
    parser.add_argument("--cache-dir", type=Path, help="disk cache directory")
    parser.add_argument("--log-level")


def add_model_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Readiness and model control flags, shared by `serve` and `up` (which passes them on)."""
    parser.add_argument(
        "--no-strict-readiness",
        dest="strict_readiness",
        action="store_const",
        const=False,
        help="SERVING when at least one model is ready (default: only when none failed to load)",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit", "poll"),
        help="none (default): RepositoryModelLoad/Unload refused; explicit: allowed; "
        "poll: the workers follow the repository on disk",
    )
    parser.add_argument(
        "--repository-poll-seconds", type=float, help="poll mode: seconds between two reads"
    )


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from flags given (not None), then TENSORGATE_* variables, then defaults."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    given.update(overrides)
    return Settings(**given)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )


def install_stop_signals() -> threading.Event:
    """SIGTERM and SIGINT set the returned event instead of killing the process."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def run_worker(settings: Settings) -> int:
    from tensorgate.server.app import ServerApp

    stop = install_stop_signals()
    app = ServerApp(settings)
    app.start()
    while not stop.wait(1.0):
        pass
    app.stop()
    return 0


def handle(args: argparse.Namespace) -> int:
    from tensorgate.server.errors import RepositoryError
    from tensorgate.server.repository import check_repository

    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    try:
        check_repository(settings.model_repository)
    except RepositoryError as error:
        print(f"tensorgate serve: {error.message}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from tensorgate.server.workers import run_workers

        return run_workers(settings)
    return run_worker(settings)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model repository over gRPC")
    add_settings_arguments(parser)
    parser.add_argument("--port", type=int, help="gRPC port (default 8001)")
    parser.set_defaults(func=handle)
