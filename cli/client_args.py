"""Flags shared by the sub-commands that call a running server."""

from __future__ import annotations

import argparse
import os

DEFAULT_TARGET = os.environ.get("TENSORGATE_TARGET", "127.0.0.1:8000")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"host:port of the server or front door (default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="deadline of each call, seconds"
    )
