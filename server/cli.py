"""The ``tensorgate`` command. Each sub-command lives in its own module with a ``register`` function."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that each define ``register(subparsers)``; imported lazily so `tensorgate --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "tensorgate.server.commands.serve",
    "tensorgate.server.commands.infer",
    "tensorgate.server.commands.models",
    "tensorgate.server.commands.health",
    "tensorgate.server.commands.optimize",
    "tensorgate.server.commands.bench",
    "tensorgate.server.commands.top",
    "tensorgate.server.commands.up",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorgate", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: every sub-command sets ``func(args) -> exit code``."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
