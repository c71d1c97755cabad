"""A worker process from start to exit: logging, stop signals, and one worker or several."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tensorgate.server.flags import SettingsError, add_settings_flags, settings_from_flags
from tensorgate.server.settings import Settings
from tensorgate.server.signals import install_stop_signals

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def run_worker(settings: Settings) -> int:
    """Serves until SIGTERM or SIGINT, then drains (see ``ServerApp.stop``)."""
    from tensorgate.server.app import ServerApp
    from tensorgate.server.auth import TokenFileError
    from tensorgate.server.tls import TlsFileError

    stop = install_stop_signals()
    try:
        app = ServerApp(settings)
        app.start()
    except (TlsFileError, TokenFileError, FileNotFoundError) as error:
        logging.getLogger(__name__).error("cannot start: %s", error)
        return 2
    while not stop.wait(1.0):
        pass
    app.stop()
    return 0


def serve(settings: Settings) -> int:
    """``tensorgate serve``: one worker in this process, or ``settings.workers`` child processes."""
    from tensorgate.server.errors import RepositoryError
    from tensorgate.server.repository import check_repository

    configure_logging(settings.log_level)
    try:
        check_repository(settings.model_repository)
    except RepositoryError as error:
        sys.stderr.write(f"tensorgate serve: {error.message}\n")
        return 2
    if settings.workers > 1:
        from tensorgate.server.workers import run_workers

        return run_workers(settings)
    return run_worker(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tensorgate.server [flags]``: the worker entry point that needs no CLI package."""
    parser = argparse.ArgumentParser(prog="python -m tensorgate.server", description=__doc__)
    add_settings_flags(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_flags(args)
    except SettingsError as error:
        sys.stderr.write(f"{parser.prog}: {error}\n")
        return 2
    return serve(settings)
