"""``tensorgate models``: the repository's models and the state of each."""

from __future__ import annotations

import argparse
import sys

from tensorgate.cli.client_args import add_target_arguments
from tensorgate.client import Client, InferenceServerError


def handle(args: argparse.Namespace) -> int:
    try:
        with Client(args.target, timeout=args.timeout) as client:
            models = client.models()
    except InferenceServerError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    print(f"{'MODEL':<24} {'VERSION':<8} {'STATE':<12} REASON")
    for model in models:
        print(f"{model.name:<24} {model.version:<8} {model.state:<12} {model.reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the repository's models and their state")
    add_target_arguments(parser)
    parser.set_defaults(func=handle)
