"""``tensorgate serve``: one worker, or ``--workers N`` worker processes on consecutive ports."""

from __future__ import annotations

import argparse

from tensorgate.server.flags import add_settings_flags, settings_from_flags

HELP = "serve a model repository over gRPC (one worker, or --workers N processes)"


def handle(args: argparse.Namespace) -> int:
    from tensorgate.server.process import serve

    return serve(settings_from_flags(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help=HELP, description=HELP)
    add_settings_flags(parser)
    parser.set_defaults(func=handle)
